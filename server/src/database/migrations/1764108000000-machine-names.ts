import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * A machine's name is unique among machines that are not revoked: a revoked machine keeps its name in history, and a
 * new machine (the same host registered again) may take it.
 */
export class MachineNames1764108000000 implements MigrationInterface {
  name = 'MachineNames1764108000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE machines DROP CONSTRAINT machines_name_key`);
    await q.query(`CREATE UNIQUE INDEX machines_name_active ON machines (name) WHERE revoked_at IS NULL`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP INDEX machines_name_active`);
    await q.query(`ALTER TABLE machines ADD CONSTRAINT machines_name_key UNIQUE (name)`);
  }
}
