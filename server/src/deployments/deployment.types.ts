import type { FailureKind } from '#shared/api/types.js';
import type { RunState } from '../orchestration/planner.js';

export const ACTIVE_STATES = ['queued', 'executing', 'waiting', 'cancelling'] as const;
export type DeploymentState = (typeof ACTIVE_STATES)[number] | 'success' | 'failed' | 'cancelled';

export interface DeploymentRow {
  id: string;
  release_id: string;
  project_id: string;
  environment_id: string;
  state: DeploymentState;
  guided_failure: boolean;
  specific_machine_ids: string[];
  excluded_machine_ids: string[];
  error: string | null;
  owner_node: string | null;
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
  started_at: Date | null;
  finished_at: Date | null;
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
  /** `machine`: pending because its machine is busy with another deployment (it holds no slot meanwhile). */
  waiting_for: 'machine' | null;
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
  expires_at: Date;
  released_at: Date | null;
  outcome: string | null;
  last_log_seq: number;
}

export type InterruptionKind = 'manual-intervention' | 'guided-failure';

export interface InterruptionRow {
  id: string;
  deployment_id: string;
  kind: InterruptionKind;
  step_index: number;
  action_index: number;
  target_run_id: string;
  machine_id: string | null;
  instructions: string | null;
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
  actionNames: string[];
}
