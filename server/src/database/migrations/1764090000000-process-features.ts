import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * The whole deployment process: steps that run on the server (manual intervention: a target run without a
 * machine), interruptions (manual intervention, guided failure), project variables and default timeout, output
 * variables, and a step that an operator aborted.
 */
export class ProcessFeatures1764090000000 implements MigrationInterface {
  name = 'ProcessFeatures1764090000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      ALTER TABLE target_runs ALTER COLUMN machine_id DROP NOT NULL;
      ALTER TABLE target_runs DROP CONSTRAINT target_runs_deployment_id_step_index_machine_id_key;
      CREATE UNIQUE INDEX target_runs_one_per_machine ON target_runs (deployment_id, step_index, machine_id) WHERE machine_id IS NOT NULL;
      ALTER TABLE deployment_steps ADD COLUMN aborted boolean NOT NULL DEFAULT false;
      ALTER TABLE deployment_steps ADD COLUMN skip_reason text;
      ALTER TABLE projects ADD COLUMN variables jsonb NOT NULL DEFAULT '[]';
      ALTER TABLE projects ADD COLUMN variables_version integer NOT NULL DEFAULT 1;
      ALTER TABLE projects ADD COLUMN default_timeout_seconds integer;
      ALTER TABLE releases ADD COLUMN default_timeout_seconds integer;
      ALTER TABLE deployments ADD COLUMN aborted boolean NOT NULL DEFAULT false;
      CREATE TABLE interruptions (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        deployment_id uuid NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
        kind text NOT NULL,
        step_index integer NOT NULL,
        action_index integer NOT NULL,
        target_run_id uuid NOT NULL REFERENCES target_runs(id) ON DELETE CASCADE,
        machine_id uuid,
        instructions text,
        state text NOT NULL DEFAULT 'pending',
        result text,
        notes text,
        submitted_by text,
        submitted_at timestamptz,
        created_at timestamptz NOT NULL DEFAULT now()
      );
      CREATE INDEX interruptions_deployment ON interruptions (deployment_id, state);
      CREATE UNIQUE INDEX interruptions_one_pending_per_target ON interruptions (target_run_id) WHERE state = 'pending';
      CREATE TABLE output_variables (
        deployment_id uuid NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
        step_name text NOT NULL,
        action_name text NOT NULL,
        machine_id uuid,
        machine_name text NOT NULL,
        name text NOT NULL,
        value text NOT NULL,
        sensitive boolean NOT NULL DEFAULT false,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (deployment_id, step_name, action_name, machine_name, name)
      );
    `);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`
      DROP TABLE output_variables; DROP TABLE interruptions;
      ALTER TABLE deployments DROP COLUMN aborted;
      ALTER TABLE releases DROP COLUMN default_timeout_seconds;
      ALTER TABLE projects DROP COLUMN default_timeout_seconds; ALTER TABLE projects DROP COLUMN variables_version; ALTER TABLE projects DROP COLUMN variables;
      ALTER TABLE deployment_steps DROP COLUMN skip_reason; ALTER TABLE deployment_steps DROP COLUMN aborted;
      DROP INDEX target_runs_one_per_machine;
      DELETE FROM target_runs WHERE machine_id IS NULL;
      ALTER TABLE target_runs ADD CONSTRAINT target_runs_deployment_id_step_index_machine_id_key UNIQUE (deployment_id, step_index, machine_id);
      ALTER TABLE target_runs ALTER COLUMN machine_id SET NOT NULL;
    `);
  }
}
