import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Day two (issue #18, the server's part):
 * - scheduled deployments: `deployments.queue_at` / `queue_expires_at`, and the `scheduled` state they wait in (a
 *   partial index finds the due ones; `scheduled` is not an active state, so the existing active-state indexes stay);
 * - target triggers: `projects.auto_deploy_new_machines`, `deployments.trigger` (`new-machine`) with the machine it
 *   was made for, and on the machine the last trigger that could not deploy to it (`last_trigger_error`);
 * - retention: an index over finished deployments by age, which the retention sweep reads oldest first.
 */
export class DayTwo1764136800000 implements MigrationInterface {
  name = 'DayTwo1764136800000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      ALTER TABLE deployments
        ADD COLUMN queue_at timestamptz,
        ADD COLUMN queue_expires_at timestamptz,
        ADD COLUMN trigger text,
        ADD COLUMN trigger_machine_id uuid REFERENCES machines(id)`);
    await q.query(`CREATE INDEX deployments_scheduled ON deployments (queue_at) WHERE state = 'scheduled'`);
    await q.query(
      `CREATE INDEX deployments_not_started_expiring ON deployments (queue_expires_at) WHERE queue_expires_at IS NOT NULL AND started_at IS NULL`,
    );
    await q.query(
      `CREATE INDEX deployments_triggered ON deployments (trigger_machine_id, project_id, environment_id) WHERE trigger_machine_id IS NOT NULL`,
    );
    await q.query(
      `CREATE INDEX deployments_finished_age ON deployments (created_at) WHERE state IN ('success', 'failed', 'cancelled')`,
    );
    await q.query(`ALTER TABLE projects ADD COLUMN auto_deploy_new_machines boolean NOT NULL DEFAULT false`);
    await q.query(`ALTER TABLE machines ADD COLUMN last_trigger_error text, ADD COLUMN last_trigger_at timestamptz`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE machines DROP COLUMN last_trigger_error, DROP COLUMN last_trigger_at`);
    await q.query(`ALTER TABLE projects DROP COLUMN auto_deploy_new_machines`);
    await q.query(`DROP INDEX deployments_finished_age`);
    await q.query(`DROP INDEX deployments_triggered`);
    await q.query(`DROP INDEX deployments_not_started_expiring`);
    await q.query(`DROP INDEX deployments_scheduled`);
    // A scheduled deployment means nothing to the older schema: it ends cancelled.
    await q.query(
      `UPDATE deployments SET state = 'cancelled', finished_at = now(), error = 'cancelled: scheduled deployments were removed by a schema downgrade' WHERE state = 'scheduled'`,
    );
    await q.query(
      `ALTER TABLE deployments DROP COLUMN queue_at, DROP COLUMN queue_expires_at, DROP COLUMN trigger, DROP COLUMN trigger_machine_id`,
    );
  }
}
