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
  started_at: Date | null;
  finished_at: Date | null;
}
