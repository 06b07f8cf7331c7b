import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * One deployment at a time per project and environment, and one deployment's work at a time per machine:
 * - `deployments.queue_seq`: the order deployments were created in, per project and environment, as committed (taken
 *   under an advisory lock of the pair, so a later number is never committed before an earlier one);
 * - `target_runs.waiting_for` / `waiting_since`: a target run whose machine is busy with another deployment waits,
 *   holding no slot, and its place in the machine's line is when it began waiting;
 * - `projects.allow_concurrent_on_machines`: a project that opts out of the machine rule.
 */
export class OneAtATime1764100800000 implements MigrationInterface {
  name = 'OneAtATime1764100800000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`CREATE SEQUENCE deployments_queue_seq`);
    await q.query(`ALTER TABLE deployments ADD COLUMN queue_seq bigint`);
    await q.query(
      `UPDATE deployments d SET queue_seq = o.n FROM (SELECT id, row_number() OVER (ORDER BY created_at, id) AS n FROM deployments) o WHERE o.id = d.id`,
    );
    await q.query(
      `SELECT setval('deployments_queue_seq', (SELECT coalesce(max(queue_seq), 0) + 1 FROM deployments), false)`,
    );
    await q.query(
      `ALTER TABLE deployments ALTER COLUMN queue_seq SET DEFAULT nextval('deployments_queue_seq'), ALTER COLUMN queue_seq SET NOT NULL`,
    );
    await q.query(
      `CREATE INDEX deployments_queue ON deployments (project_id, environment_id, queue_seq) WHERE state IN ('queued', 'executing', 'waiting', 'cancelling')`,
    );
    await q.query(`ALTER TABLE target_runs ADD COLUMN waiting_for text, ADD COLUMN waiting_since timestamptz`);
    await q.query(
      `CREATE INDEX target_runs_waiting ON target_runs (machine_id, waiting_since) WHERE waiting_since IS NOT NULL`,
    );
    await q.query(`ALTER TABLE projects ADD COLUMN allow_concurrent_on_machines boolean NOT NULL DEFAULT false`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE projects DROP COLUMN allow_concurrent_on_machines`);
    await q.query(`DROP INDEX target_runs_waiting`);
    await q.query(`ALTER TABLE target_runs DROP COLUMN waiting_for, DROP COLUMN waiting_since`);
    await q.query(`DROP INDEX deployments_queue`);
    await q.query(`ALTER TABLE deployments DROP COLUMN queue_seq`);
    await q.query(`DROP SEQUENCE deployments_queue_seq`);
  }
}
