import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Rollout policy and steering (docs/api.md, "Rollout policy on a step", "Steering a running deployment"): machine
 * labels; an environment's rollback default; a deployment's pause, retry and rollback links; a step's batches, its
 * gate between batches (bake, health check, approval) and its resolved policy; a target run's batch, skip reason,
 * bake check and resumption after a manual intervention; a lease's purpose (a target's actions, or its bake check);
 * batch approvals (no target run, a batch, a timeout and its default answer). The partial indexes of active
 * deployments now count `paused` as active.
 */
export class RolloutPolicy1764111600000 implements MigrationInterface {
  name = 'RolloutPolicy1764111600000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      ALTER TABLE machines ADD COLUMN labels jsonb NOT NULL DEFAULT '{}';
      ALTER TABLE environments ADD COLUMN rollback_on_failure boolean NOT NULL DEFAULT false;
      ALTER TABLE deployments
        ADD COLUMN rollback_on_failure boolean NOT NULL DEFAULT false,
        ADD COLUMN retry_of uuid REFERENCES deployments(id) ON DELETE SET NULL,
        ADD COLUMN rollback_of uuid REFERENCES deployments(id) ON DELETE SET NULL,
        ADD COLUMN rolled_back_by uuid REFERENCES deployments(id) ON DELETE SET NULL,
        ADD COLUMN paused_at timestamptz;
      ALTER TABLE deployment_steps
        ADD COLUMN batch_count integer NOT NULL DEFAULT 1,
        ADD COLUMN current_batch integer,
        ADD COLUMN gate text,
        ADD COLUMN gate_until timestamptz,
        ADD COLUMN policy jsonb NOT NULL DEFAULT '{}';
      ALTER TABLE target_runs
        ADD COLUMN batch integer NOT NULL DEFAULT 0,
        ADD COLUMN skip_reason text,
        ADD COLUMN bake_check text,
        ADD COLUMN resume boolean NOT NULL DEFAULT false;
      ALTER TABLE leases ADD COLUMN purpose text NOT NULL DEFAULT 'run';
      ALTER TABLE interruptions
        ALTER COLUMN target_run_id DROP NOT NULL,
        ADD COLUMN batch integer,
        ADD COLUMN expires_at timestamptz,
        ADD COLUMN default_result text;
      CREATE UNIQUE INDEX interruptions_one_pending_per_batch ON interruptions (deployment_id, step_index, batch)
        WHERE state = 'pending' AND batch IS NOT NULL;
      DROP INDEX deployments_active;
      CREATE INDEX deployments_active ON deployments (created_at) WHERE state IN ('queued', 'executing', 'waiting', 'paused', 'cancelling');
      DROP INDEX deployments_queue;
      CREATE INDEX deployments_queue ON deployments (project_id, environment_id, queue_seq) WHERE state IN ('queued', 'executing', 'waiting', 'paused', 'cancelling');
    `);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`
      DROP INDEX deployments_queue;
      CREATE INDEX deployments_queue ON deployments (project_id, environment_id, queue_seq) WHERE state IN ('queued', 'executing', 'waiting', 'cancelling');
      DROP INDEX deployments_active;
      CREATE INDEX deployments_active ON deployments (created_at) WHERE state IN ('queued', 'executing', 'waiting', 'cancelling');
      DROP INDEX interruptions_one_pending_per_batch;
      DELETE FROM interruptions WHERE target_run_id IS NULL;
      ALTER TABLE interruptions DROP COLUMN default_result, DROP COLUMN expires_at, DROP COLUMN batch, ALTER COLUMN target_run_id SET NOT NULL;
      ALTER TABLE leases DROP COLUMN purpose;
      ALTER TABLE target_runs DROP COLUMN resume, DROP COLUMN bake_check, DROP COLUMN skip_reason, DROP COLUMN batch;
      ALTER TABLE deployment_steps DROP COLUMN policy, DROP COLUMN gate_until, DROP COLUMN gate, DROP COLUMN current_batch, DROP COLUMN batch_count;
      ALTER TABLE deployments DROP COLUMN paused_at, DROP COLUMN rolled_back_by, DROP COLUMN rollback_of, DROP COLUMN retry_of, DROP COLUMN rollback_on_failure;
      ALTER TABLE environments DROP COLUMN rollback_on_failure;
      ALTER TABLE machines DROP COLUMN labels;
    `);
  }
}
