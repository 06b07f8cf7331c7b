import type { FailureKind } from '#shared/api/types.js';
import type { RunState } from '../orchestration/planner.js';

export const ACTIVE_STATES = ['queued', 'executing', 'waiting', 'paused', 'cancelling'] as const;
/** ACTIVE_STATES as an SQL list, for `state IN (...)` (the partial indexes of active deployments use the same list). */
export const ACTIVE_STATES_SQL = ACTIVE_STATES.map((s) => `'${s}'`).join(', ');
/**
 * `scheduled`: waiting for its `queue_at`; not active (it holds no place in the queue, no owner drives it) until the
 * scheduler makes it `queued` (deployments/scheduler.ts).
 */
export type DeploymentState = (typeof ACTIVE_STATES)[number] | 'scheduled' | 'success' | 'failed' | 'cancelled';

export interface DeploymentRow {
  id: string;
  release_id: string;
  project_id: string;
  environment_id: string;
  state: DeploymentState;
  guided_failure: boolean;
  rollback_on_failure: boolean;
  retry_of: string | null;
  rollback_of: string | null;
  rolled_back_by: string | null;
  /** The API key that asked for it (null on deployments made before keys had roles). */
  created_by_key_id: string | null;
  created_by_name: string | null;
  /** While paused: since when (no target starts; running ones finish). */
  paused_at: Date | null;
  specific_machine_ids: string[];
  excluded_machine_ids: string[];
  /** Why it ended without running (a scheduled deployment past its expiry), or why a trigger's could not start. */
  error: string | null;
  owner_node: string | null;
  /** A scheduled deployment: when it is queued, and when, not started by then, it is cancelled instead. */
  queue_at: Date | null;
  queue_expires_at: Date | null;
  /** What made it, when not a person: `new-machine` (a target trigger), with the machine it was made for. */
  trigger: 'new-machine' | null;
  trigger_machine_id: string | null;
  /** Creation order per project and environment, as committed (see DeploymentRepository.insertDeployment). */
  queue_seq: string;
  created_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
}

export interface StepRow {
  deployment_id: string;
  step_index: number;
  name: string;
  state: RunState;
  window_size: number;
  max_failures: number;
  condition: 'success' | 'failure' | 'always';
  start_trigger: 'afterPrevious' | 'withPrevious';
  aborted: boolean;
  skip_reason: string | null;
  batch_count: number;
  /** The batch in progress or waited on (from 0); null before the step starts. */
  current_batch: number | null;
  /** What the step waits for before its next batch. */
  gate: StepGate | null;
  /** The bake's end, while `gate` is `bake`. */
  gate_until: Date | null;
  policy: StepPolicy;
  started_at: Date | null;
  finished_at: Date | null;
}

export type StepGate = 'bake' | 'health-check' | 'approval';

/** A step's rollout policy, resolved when the deployment is created (the release's process is frozen). */
export interface StepPolicy {
  bakeSeconds?: number;
  healthCheck?: boolean;
  approveEachBatch?: boolean;
  approvalTimeoutSeconds?: number;
  approvalDefault?: 'abort' | 'proceed';
  skipUnavailable?: boolean;
}

export interface TargetAction {
  name: string;
  type: string;
  state: RunState;
  exitCode?: number | null;
  skipReason?: string;
}

export interface TargetRunRow {
  id: string;
  deployment_id: string;
  step_index: number;
  /** Null for the target run of a step that runs on the server. */
  machine_id: string | null;
  machine_name: string;
  position: number;
  state: RunState;
  actions: TargetAction[];
  attempt: number;
  error: string | null;
  /** Why it failed, written when it did (null otherwise). */
  failure_kind: FailureKind | null;
  /**
   * `machine`: pending because its machine is busy with another deployment (it holds no slot meanwhile); `person`:
   * running, at a manual intervention (it keeps its slot).
   */
  waiting_for: 'machine' | 'person' | null;
  /** The step's batch it belongs to (from 0). */
  batch: number;
  skip_reason: string | null;
  /** Its health check at the end of its batch's bake. */
  bake_check: 'pending' | 'running' | 'success' | 'failed' | null;
  /** Set when a person proceeded past its manual intervention: its next lease goes on, it is not a new attempt. */
  resume: boolean;
  /** When it began waiting: its place in its machine's line. */
  waiting_since: Date | null;
  started_at: Date | null;
  finished_at: Date | null;
}

export interface LeaseRow {
  id: string;
  deployment_id: string;
  step_index: number;
  slot: number;
  target_run_id: string;
  machine_id: string;
  node_id: string;
  state: 'offered' | 'accepted' | 'released';
  /** `run`: the target's actions; `check`: its health check at the end of a bake. */
  purpose: 'run' | 'check';
  expires_at: Date;
  released_at: Date | null;
  outcome: string | null;
  last_log_seq: number;
}

export type InterruptionKind = 'manual-intervention' | 'guided-failure' | 'batch-approval';

export interface InterruptionRow {
  id: string;
  deployment_id: string;
  kind: InterruptionKind;
  step_index: number;
  action_index: number;
  /** Null for a batch approval. */
  target_run_id: string | null;
  machine_id: string | null;
  instructions: string | null;
  /** A batch approval's batch. */
  batch: number | null;
  /** A batch approval's timeout, when it has one, and the answer then applied. */
  expires_at: Date | null;
  default_result: 'proceed' | 'abort' | null;
  state: 'pending' | 'submitted' | 'cancelled';
  result: string | null;
  notes: string | null;
  submitted_by: string | null;
  submitted_at: Date | null;
  created_at: Date;
}

export interface OutputVariableRow {
  deployment_id: string;
  step_name: string;
  action_name: string;
  machine_id: string | null;
  machine_name: string;
  name: string;
  value: string;
  sensitive: boolean;
}

/** A line to append to a deployment's log. */
export interface LogEntryInput {
  level: 'debug' | 'info' | 'warn' | 'error';
  text: string;
  at?: Date | string;
  machineId?: string | null;
  stepName?: string | null;
  actionName?: string | null;
}

/** A line of a deployment's log as the API shows it. */
export type { LogEntry } from '#shared/api/types.js';

/** Immutable facts about a lease (who, which step, the action names), as the paths that handle agents' messages need them. */
export interface LeaseContext {
  leaseId: string;
  deploymentId: string;
  machineId: string;
  machineName: string;
  targetRunId: string;
  stepIndex: number;
  stepName: string;
  /** The target's actions by index, as its agent reports them: the step's actions, then its health check if any. */
  actionNames: string[];
  /** `check`: the lease runs the target's bake check, not its actions. */
  purpose: 'run' | 'check';
  /** The step has manual interventions on its targets: a lease may end before the target's last action. */
  segmented: boolean;
}
