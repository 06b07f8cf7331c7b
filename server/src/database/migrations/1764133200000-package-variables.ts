import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Retention on agents: `projects.keep_releases`, how many newest installation folders of a package an agent keeps
 * after a successful package action (older ones are deleted). Offers carry the project's value at offer time.
 */
export class PackageVariables1764133200000 implements MigrationInterface {
  name = 'PackageVariables1764133200000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE projects ADD COLUMN keep_releases integer NOT NULL DEFAULT 3`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE projects DROP COLUMN keep_releases`);
  }
}
