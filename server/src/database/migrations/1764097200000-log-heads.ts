import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * A deployment log's sequence counter moves off the deployment row into a row of its own. Log lines then take only
 * that row's lock, so agents' log writes and state changes (results, dispatcher rounds) no longer queue behind one
 * another on the deployment row.
 */
export class LogHeads1764097200000 implements MigrationInterface {
  name = 'LogHeads1764097200000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`CREATE TABLE deployment_log_heads (
      deployment_id uuid PRIMARY KEY REFERENCES deployments(id) ON DELETE CASCADE,
      seq bigint NOT NULL DEFAULT 0
    )`);
    await q.query(`INSERT INTO deployment_log_heads (deployment_id, seq) SELECT id, log_seq FROM deployments`);
    await q.query(`ALTER TABLE deployments DROP COLUMN log_seq`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE deployments ADD COLUMN log_seq bigint NOT NULL DEFAULT 0`);
    await q.query(`UPDATE deployments d SET log_seq = h.seq FROM deployment_log_heads h WHERE h.deployment_id = d.id`);
    await q.query(`DROP TABLE deployment_log_heads`);
  }
}
