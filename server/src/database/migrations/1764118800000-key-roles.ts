import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Roles on API keys, and who created a deployment. Keys made before roles existed could do everything, so they
 * (and the admin key) become `admin`; a null scope means every environment or project. A deployment remembers the
 * key that asked for it (id and name: the name stays readable after the key is revoked), which a manual
 * intervention or batch approval with `preventSelfApproval` compares with whoever answers; deployments made before
 * this have no creator and nothing to compare.
 */
export class KeyRoles1764118800000 implements MigrationInterface {
  name = 'KeyRoles1764118800000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE api_keys ADD COLUMN role text NOT NULL DEFAULT 'admin'`);
    await q.query(
      `ALTER TABLE api_keys ADD CONSTRAINT api_keys_role CHECK (role IN ('viewer', 'deployer', 'approver', 'admin'))`,
    );
    await q.query(`ALTER TABLE api_keys ADD COLUMN environment_ids jsonb`);
    await q.query(`ALTER TABLE api_keys ADD COLUMN project_ids jsonb`);
    await q.query(`ALTER TABLE deployments ADD COLUMN created_by_key_id uuid`);
    await q.query(`ALTER TABLE deployments ADD COLUMN created_by_name text`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE deployments DROP COLUMN created_by_name`);
    await q.query(`ALTER TABLE deployments DROP COLUMN created_by_key_id`);
    await q.query(`ALTER TABLE api_keys DROP COLUMN project_ids`);
    await q.query(`ALTER TABLE api_keys DROP COLUMN environment_ids`);
    await q.query(`ALTER TABLE api_keys DROP CONSTRAINT api_keys_role`);
    await q.query(`ALTER TABLE api_keys DROP COLUMN role`);
  }
}
