import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Why a target run failed becomes a column, written when it fails (agent-lost, unknown-result, timeout, script,
 * aborted), instead of a prefix read back out of its error message. Failed runs already stored get the kind their
 * message's prefix gave them.
 */
export class FailureKind1764104400000 implements MigrationInterface {
  name = 'FailureKind1764104400000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE target_runs ADD COLUMN failure_kind text`);
    await q.query(
      `UPDATE target_runs SET failure_kind = CASE WHEN error LIKE 'agent lost%' THEN 'agent-lost' WHEN error LIKE 'unknown result%' THEN 'unknown-result' WHEN error LIKE 'timed out%' THEN 'timeout' ELSE 'script' END
       WHERE state = 'failed'`,
    );
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE target_runs DROP COLUMN failure_kind`);
  }
}
