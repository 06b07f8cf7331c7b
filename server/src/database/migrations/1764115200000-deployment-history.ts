import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * A project's deployments by time: the previous successful release of a rollback (per project and environment) and
 * the preview's estimates (a project's newest finished deployments) read them newest first, and would otherwise
 * scan every deployment of the table.
 */
export class DeploymentHistory1764115200000 implements MigrationInterface {
  name = 'DeploymentHistory1764115200000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`CREATE INDEX deployments_history ON deployments (project_id, environment_id, created_at)`);
    await q.query(`CREATE INDEX deployments_by_project ON deployments (project_id, created_at)`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP INDEX deployments_by_project`);
    await q.query(`DROP INDEX deployments_history`);
  }
}
