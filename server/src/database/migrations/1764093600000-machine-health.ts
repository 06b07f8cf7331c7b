import type { MigrationInterface, QueryRunner } from 'typeorm';

/** What the last health check measured on each machine. */
export class MachineHealth1764093600000 implements MigrationInterface {
  name = 'MachineHealth1764093600000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE machines ADD COLUMN health_rtt_ms integer, ADD COLUMN free_disk_bytes bigint`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE machines DROP COLUMN health_rtt_ms, DROP COLUMN free_disk_bytes`);
  }
}
