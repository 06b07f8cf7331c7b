import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Lifecycles: the phases of environments a release is promoted through. A project may follow one and a channel may
 * follow its own (which wins); the foreign keys refuse deleting a lifecycle that either still names. Phases are one
 * jsonb list because they are always read and written whole, with the lifecycle. A release's progression reads its
 * deployments by environment, newest first, hence the index.
 */
export class Lifecycles1764126000000 implements MigrationInterface {
  name = 'Lifecycles1764126000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE lifecycles (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        name text NOT NULL UNIQUE,
        phases jsonb NOT NULL DEFAULT '[]',
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
      )
    `);
    await q.query(`ALTER TABLE projects ADD COLUMN lifecycle_id uuid REFERENCES lifecycles(id)`);
    await q.query(`ALTER TABLE channels ADD COLUMN lifecycle_id uuid REFERENCES lifecycles(id)`);
    await q.query(`CREATE INDEX projects_lifecycle ON projects (lifecycle_id) WHERE lifecycle_id IS NOT NULL`);
    await q.query(`CREATE INDEX channels_lifecycle ON channels (lifecycle_id) WHERE lifecycle_id IS NOT NULL`);
    await q.query(`CREATE INDEX deployments_by_release ON deployments (release_id, environment_id, created_at)`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP INDEX deployments_by_release`);
    await q.query(`ALTER TABLE channels DROP COLUMN lifecycle_id`);
    await q.query(`ALTER TABLE projects DROP COLUMN lifecycle_id`);
    await q.query(`DROP TABLE lifecycles`);
  }
}
