import type { MigrationInterface, QueryRunner } from 'typeorm';
import type { VariableDef } from '#shared/variables/index.js';
import { keyForMigrations } from '../../secrets/migration-key.js';
import { CHECK_PLAINTEXT, isOtherKeysCheck } from '../../secrets/secrets-key.js';
import { isEncrypted, type SecretBox } from '../../secrets/secret-box.js';

/**
 * Sensitive values at rest: encrypts the sensitive values stored in plain text by earlier versions (projects'
 * variables, releases' frozen copies, sensitive output variables), and adds `secrets_check`, the row that tells which
 * key the database's secrets are under. Names, scopes and non-sensitive values stay as they are. Values already
 * encrypted are left alone, so running it again (or on a database another node migrated) changes nothing.
 */
export class SecretsAtRest1764129600000 implements MigrationInterface {
  name = 'SecretsAtRest1764129600000';

  async up(q: QueryRunner): Promise<void> {
    // Two nodes migrating one database at once: one after the other, and the second finds nothing left to do.
    await q.query(`SELECT pg_advisory_xact_lock(1764129600000)`);
    await q.query(`
      CREATE TABLE IF NOT EXISTS secrets_check (
        id integer PRIMARY KEY CHECK (id = 1),
        value text NOT NULL,
        fingerprint text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
      )`);
    const projects = await sensitiveRows(q, 'projects');
    const releases = await sensitiveRows(q, 'releases');
    const outputs: OutputRow[] = await q.query(
      `SELECT deployment_id, step_name, action_name, machine_name, name, value FROM output_variables WHERE sensitive AND value NOT LIKE 'enc:v1:%'`,
    );
    const pending = [...projects, ...releases].filter((r) => sealVariables(r.variables, null).changed);
    if (!pending.length && !outputs.length) return;
    const box = await migrationKey(q, 'encrypt the sensitive values stored in plain text');
    for (const [table, rows] of [
      ['projects', projects],
      ['releases', releases],
    ] as const)
      for (const r of rows) {
        const sealed = sealVariables(r.variables, box);
        if (sealed.changed)
          await q.query(`UPDATE ${table} SET variables = $1::jsonb WHERE id = $2`, [
            JSON.stringify(sealed.variables),
            r.id,
          ]);
      }
    for (const o of outputs) await updateOutput(q, o, box.encrypt(o.value));
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`SELECT pg_advisory_xact_lock(1764129600000)`);
    const projects = await sensitiveRows(q, 'projects');
    const releases = await sensitiveRows(q, 'releases');
    const outputs: OutputRow[] = await q.query(
      `SELECT deployment_id, step_name, action_name, machine_name, name, value FROM output_variables WHERE sensitive AND value LIKE 'enc:v1:%'`,
    );
    const pending = [...projects, ...releases].filter((r) =>
      r.variables.some((v) => v.sensitive && isEncrypted(v.value)),
    );
    if (pending.length || outputs.length) {
      const box = await migrationKey(q, 'decrypt the stored sensitive values');
      for (const [table, rows] of [
        ['projects', projects],
        ['releases', releases],
      ] as const)
        for (const r of rows)
          await q.query(`UPDATE ${table} SET variables = $1::jsonb WHERE id = $2`, [
            JSON.stringify(openVariables(r.variables, box)),
            r.id,
          ]);
      for (const o of outputs) await updateOutput(q, o, box.decrypt(o.value));
    }
    await q.query(`DROP TABLE secrets_check`);
  }
}

interface OutputRow {
  deployment_id: string;
  step_name: string;
  action_name: string;
  machine_name: string;
  name: string;
  value: string;
}

/**
 * Variables with their sensitive values encrypted (`box` null: only whether any needs it). Exactly the sensitive
 * values change; each variable keeps its other fields and its place in the list.
 */
export function sealVariables(
  vars: VariableDef[],
  box: SecretBox | null,
): { variables: VariableDef[]; changed: boolean } {
  let changed = false;
  const variables = vars.map((v) => {
    if (!v.sensitive || typeof v.value !== 'string' || isEncrypted(v.value)) return v;
    changed = true;
    return box ? { ...v, value: box.encrypt(v.value) } : v;
  });
  return { variables, changed };
}

/** The reverse of sealVariables (the down migration): sensitive values decrypted, the rest as they are. */
export function openVariables(vars: VariableDef[], box: SecretBox): VariableDef[] {
  return vars.map((v) => (v.sensitive && isEncrypted(v.value) ? { ...v, value: box.decrypt(v.value) } : v));
}

function sensitiveRows(
  q: QueryRunner,
  table: 'projects' | 'releases',
): Promise<Array<{ id: string; variables: VariableDef[] }>> {
  return q.query(
    `SELECT id, variables FROM ${table} WHERE jsonb_path_exists(variables, '$[*] ? (@.sensitive == true)')`,
  );
}

function updateOutput(q: QueryRunner, o: OutputRow, value: string) {
  return q.query(
    `UPDATE output_variables SET value = $1 WHERE deployment_id = $2 AND step_name = $3 AND action_name = $4 AND machine_name = $5 AND name = $6`,
    [value, o.deployment_id, o.step_name, o.action_name, o.machine_name, o.name],
  );
}

/**
 * The key handed over by the server or `npm run migrate`, matched with the database's check row (written here when
 * absent, in the same transaction as the ciphertext it vouches for). No key: the migration fails naming
 * CUTTLE_SECRETS_KEY rather than leave secrets in plain text.
 */
async function migrationKey(q: QueryRunner, what: string): Promise<SecretBox> {
  const box = keyForMigrations();
  if (!box)
    throw new Error(
      `a secrets key is needed to ${what}: set CUTTLE_SECRETS_KEY (64 hex characters or base64 of 32 bytes), or start the server once, which makes <CUTTLE_HOME>/secrets.key and migrates`,
    );
  const [check] = await q.query(`SELECT value FROM secrets_check WHERE id = 1`);
  if (check && isOtherKeysCheck(box, check.value))
    throw new Error(
      `this database's secrets are under another key than the given one (fingerprint ${box.fingerprint}): set CUTTLE_SECRETS_KEY to the key the other nodes use`,
    );
  if (!check)
    await q.query(`INSERT INTO secrets_check (id, value, fingerprint) VALUES (1, $1, $2)`, [
      box.encrypt(CHECK_PLAINTEXT),
      box.fingerprint,
    ]);
  return box;
}
