import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * The first schema. Leases carry the window: a partial unique index over active leases of (deployment, step, slot)
 * means the database itself refuses a W+1-th lease of a step, whichever server process asks.
 */
export class Initial1764086400000 implements MigrationInterface {
  name = 'Initial1764086400000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE api_keys (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        name text NOT NULL UNIQUE,
        key_hash text NOT NULL UNIQUE,
        created_at timestamptz NOT NULL DEFAULT now(),
        revoked_at timestamptz
      );
      CREATE TABLE environments (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        name text NOT NULL UNIQUE,
        guided_failure boolean NOT NULL DEFAULT false,
        created_at timestamptz NOT NULL DEFAULT now()
      );
      CREATE TABLE registration_tokens (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        secret_hash text NOT NULL UNIQUE,
        environment_ids jsonb NOT NULL,
        roles jsonb NOT NULL DEFAULT '[]',
        max_uses integer NOT NULL,
        uses integer NOT NULL DEFAULT 0,
        expires_at timestamptz NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
      );
      CREATE TABLE machines (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        name text NOT NULL UNIQUE,
        roles jsonb NOT NULL DEFAULT '[]',
        environment_ids jsonb NOT NULL DEFAULT '[]',
        fingerprint text NOT NULL UNIQUE,
        certificate text NOT NULL,
        disabled boolean NOT NULL DEFAULT false,
        revoked_at timestamptz,
        connected_node text,
        connected_at timestamptz,
        last_seen_at timestamptz,
        agent_version text,
        health text NOT NULL DEFAULT 'unknown',
        health_reason text,
        health_checked_at timestamptz,
        created_at timestamptz NOT NULL DEFAULT now()
      );
      CREATE TABLE projects (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        name text NOT NULL UNIQUE,
        slug text NOT NULL UNIQUE,
        description text,
        default_channel_id uuid,
        process_version integer NOT NULL DEFAULT 1,
        process_steps jsonb NOT NULL DEFAULT '[]',
        created_at timestamptz NOT NULL DEFAULT now()
      );
      CREATE TABLE channels (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        project_id uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        name text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (project_id, name)
      );
      CREATE TABLE packages (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        package_id text NOT NULL,
        version text NOT NULL,
        sha256 text NOT NULL,
        size_bytes bigint NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (package_id, version)
      );
      CREATE INDEX packages_sha256 ON packages (sha256);
      CREATE TABLE releases (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        project_id uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        channel_id uuid NOT NULL REFERENCES channels(id),
        version text NOT NULL,
        process_version integer NOT NULL,
        process jsonb NOT NULL,
        variables jsonb NOT NULL DEFAULT '[]',
        packages jsonb NOT NULL DEFAULT '[]',
        created_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (project_id, version)
      );
      CREATE TABLE deployments (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        release_id uuid NOT NULL REFERENCES releases(id),
        project_id uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        environment_id uuid NOT NULL REFERENCES environments(id),
        state text NOT NULL,
        guided_failure boolean NOT NULL DEFAULT false,
        specific_machine_ids jsonb NOT NULL DEFAULT '[]',
        excluded_machine_ids jsonb NOT NULL DEFAULT '[]',
        error text,
        log_seq bigint NOT NULL DEFAULT 0,
        owner_node text,
        owner_expires_at timestamptz,
        created_at timestamptz NOT NULL DEFAULT now(),
        started_at timestamptz,
        finished_at timestamptz
      );
      CREATE INDEX deployments_active ON deployments (created_at) WHERE state IN ('queued', 'executing', 'waiting', 'cancelling');
      CREATE TABLE deployment_steps (
        deployment_id uuid NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
        step_index integer NOT NULL,
        name text NOT NULL,
        state text NOT NULL,
        window_size integer NOT NULL,
        max_failures integer NOT NULL,
        condition text NOT NULL,
        start_trigger text NOT NULL,
        started_at timestamptz,
        finished_at timestamptz,
        PRIMARY KEY (deployment_id, step_index)
      );
      CREATE TABLE target_runs (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        deployment_id uuid NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
        step_index integer NOT NULL,
        machine_id uuid NOT NULL REFERENCES machines(id),
        machine_name text NOT NULL,
        position integer NOT NULL,
        state text NOT NULL,
        actions jsonb NOT NULL,
        attempt integer NOT NULL DEFAULT 0,
        error text,
        started_at timestamptz,
        finished_at timestamptz,
        UNIQUE (deployment_id, step_index, machine_id)
      );
      CREATE INDEX target_runs_deployment ON target_runs (deployment_id, step_index, position);
      CREATE TABLE leases (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        deployment_id uuid NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
        step_index integer NOT NULL,
        slot integer NOT NULL CHECK (slot >= 0),
        target_run_id uuid NOT NULL REFERENCES target_runs(id) ON DELETE CASCADE,
        machine_id uuid NOT NULL REFERENCES machines(id),
        node_id text NOT NULL,
        state text NOT NULL DEFAULT 'offered',
        acquired_at timestamptz NOT NULL DEFAULT now(),
        accepted_at timestamptz,
        expires_at timestamptz NOT NULL,
        released_at timestamptz,
        outcome text,
        last_log_seq integer NOT NULL DEFAULT 0
      );
      CREATE UNIQUE INDEX leases_window_slot ON leases (deployment_id, step_index, slot) WHERE released_at IS NULL;
      CREATE UNIQUE INDEX leases_one_per_target_run ON leases (target_run_id) WHERE released_at IS NULL;
      CREATE INDEX leases_active_by_machine ON leases (machine_id) WHERE released_at IS NULL;
      CREATE INDEX leases_active_expiry ON leases (expires_at) WHERE released_at IS NULL;
      CREATE TABLE deployment_log (
        deployment_id uuid NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
        seq bigint NOT NULL,
        at timestamptz NOT NULL,
        level text NOT NULL,
        machine_id uuid,
        step_name text,
        action_name text,
        text text NOT NULL,
        PRIMARY KEY (deployment_id, seq)
      );
    `);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`
      DROP TABLE deployment_log; DROP TABLE leases; DROP TABLE target_runs; DROP TABLE deployment_steps;
      DROP TABLE deployments; DROP TABLE releases; DROP TABLE packages; DROP TABLE channels; DROP TABLE projects;
      DROP TABLE machines; DROP TABLE registration_tokens; DROP TABLE environments; DROP TABLE api_keys;
    `);
  }
}
