/**
 * The secrets key against a real database (PGlite in process, or PostgreSQL with DATABASE_URL): the secrets-at-rest
 * migration's SQL on stored rows, and the boot checks that decide whether a key may be used, made, or must be refused.
 * The whole server with a wrong key is the integration tests' (server/test/secrets-at-rest.test.ts).
 */
import { existsSync, mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openTestDatabase, type TestDatabase } from '../../test/support/database.js';
import { SecretsAtRest1764129600000 } from '../database/migrations/1764129600000-secrets-at-rest.js';
import { useKeyForMigrations } from './migration-key.js';
import { isEncrypted, newKey, SecretBox } from './secret-box.js';
import { confirmSecretsKey, prepareSecretsKey } from './secrets-key.js';

let db: TestDatabase;
let url: string;

beforeAll(async () => {
  db = await openTestDatabase();
  url = (db.ds.options as { url: string }).url;
}, 60_000);

afterAll(async () => {
  useKeyForMigrations(undefined);
  await db?.close();
});

const q = (sql: string, params: unknown[] = []) => db.ds.query(sql, params);
const home = () => mkdtempSync(join(tmpdir(), 'cuttle-secrets-'));

/** The migration's up or down in a transaction, as TypeORM runs it. */
async function migrate(direction: 'up' | 'down') {
  const runner = db.ds.createQueryRunner();
  await runner.startTransaction();
  try {
    await new SecretsAtRest1764129600000()[direction](runner);
    await runner.commitTransaction();
  } catch (e) {
    await runner.rollbackTransaction();
    throw e;
  } finally {
    await runner.release();
  }
}

const PLAIN = [
  { name: 'Visible', value: 'blue' },
  { name: 'Password', value: 'hunter2-plain', sensitive: true, scope: { roles: ['db'] } },
];

describe('the secrets-at-rest migration', () => {
  // Plain sensitive values from an earlier version: without a key the migration refuses (naming CUTTLE_SECRETS_KEY)
  // rather than leave them; with one it encrypts exactly them and records the key; again, it changes nothing; under
  // another key it refuses; down gives the plain values back.
  it('encrypts stored plain values once, under one key, and down decrypts them', async () => {
    await q(`DELETE FROM secrets_check`);
    const [p] = await q(`INSERT INTO projects (name, slug, variables) VALUES ('M', 'm', $1::jsonb) RETURNING id`, [
      JSON.stringify(PLAIN),
    ]);
    const stored = async () => (await q(`SELECT variables FROM projects WHERE id = $1`, [p.id]))[0].variables;

    useKeyForMigrations(undefined);
    await expect(migrate('up')).rejects.toThrow(/CUTTLE_SECRETS_KEY/);
    expect(await stored()).toEqual(PLAIN);

    const box = new SecretBox(newKey());
    useKeyForMigrations(box);
    await migrate('up');
    const once = await stored();
    expect(once[0]).toEqual(PLAIN[0]);
    expect(once[1]).toMatchObject({ name: 'Password', sensitive: true, scope: { roles: ['db'] } });
    expect(isEncrypted(once[1].value)).toBe(true);
    expect(box.decrypt(once[1].value)).toBe('hunter2-plain');
    expect(await q(`SELECT fingerprint FROM secrets_check`)).toEqual([{ fingerprint: box.fingerprint }]);

    await migrate('up');
    expect(await stored()).toEqual(once);

    await q(`UPDATE projects SET variables = $1::jsonb WHERE id = $2`, [JSON.stringify([...once, PLAIN[1]]), p.id]);
    useKeyForMigrations(new SecretBox(newKey()));
    await expect(migrate('up')).rejects.toThrow(/another key/);

    useKeyForMigrations(box);
    await migrate('down');
    expect(await stored()).toEqual([...PLAIN, PLAIN[1]]);
    expect((await q(`SELECT to_regclass('secrets_check') IS NULL AS gone`))[0].gone).toBe(true);
    // Back to the migrated schema for the next tests; nothing left to encrypt.
    await q(`DELETE FROM projects WHERE id = $1`, [p.id]);
    await migrate('up');
    expect(await q(`SELECT * FROM secrets_check`)).toEqual([]);
    useKeyForMigrations(undefined);
  });
});

describe('the boot checks', () => {
  beforeEach(() => q(`DELETE FROM secrets_check`));

  // First start: a key file of mode 0600 is made and recorded; the next start reads the same key.
  it('makes a key on a fresh database and keeps it', async () => {
    const h = home();
    const first = await prepareSecretsKey({ home: h, databaseUrl: url, create: true });
    expect(first?.createdFile).toBe(join(h, 'secrets.key'));
    expect(statSync(join(h, 'secrets.key')).mode & 0o777).toBe(0o600);
    await confirmSecretsKey(first!, url, h);
    const again = await prepareSecretsKey({ home: h, databaseUrl: url, create: true });
    expect(again?.createdFile).toBeUndefined();
    expect(again?.box.fingerprint).toBe(first?.box.fingerprint);
  });

  // A database that has a key is never given a new one: no key, or another key, is refused naming CUTTLE_SECRETS_KEY.
  it('refuses a missing or wrong key for a database that has one', async () => {
    const h = home();
    const key = (await prepareSecretsKey({ home: h, databaseUrl: url, create: true }))!;
    await confirmSecretsKey(key, url, h);
    const other = home();
    await expect(prepareSecretsKey({ home: other, databaseUrl: url, create: true })).rejects.toThrow(
      /holds encrypted secrets .*but no key was given: set CUTTLE_SECRETS_KEY/,
    );
    expect(existsSync(join(other, 'secrets.key'))).toBe(false);
    await expect(prepareSecretsKey({ home: h, envKey: newKey(), databaseUrl: url, create: true })).rejects.toThrow(
      new RegExp(`CUTTLE_SECRETS_KEY \\(fingerprint \\w+\\) is not the key .*\\(fingerprint ${key.box.fingerprint}\\)`),
    );
  });

  // Two nodes starting at once on a fresh database with keys of their own: one key is recorded, the other node is
  // refused and its just-made key file removed (nothing was encrypted under it).
  it('lets one of two fresh keys win', async () => {
    const [a, b] = [home(), home()];
    const ka = (await prepareSecretsKey({ home: a, databaseUrl: url, create: true }))!;
    const kb = (await prepareSecretsKey({ home: b, databaseUrl: url, create: true }))!;
    await confirmSecretsKey(ka, url, a);
    await expect(confirmSecretsKey(kb, url, b)).rejects.toThrow(/CUTTLE_SECRETS_KEY/);
    expect(existsSync(join(b, 'secrets.key'))).toBe(false);
    expect(existsSync(join(a, 'secrets.key'))).toBe(true);
  });

  // `npm run migrate` makes no key: with none given on a fresh database it goes on without one.
  it('makes no key when asked not to', async () => {
    const h = home();
    expect(await prepareSecretsKey({ home: h, databaseUrl: url, create: false })).toBeUndefined();
    expect(existsSync(join(h, 'secrets.key'))).toBe(false);
  });
});
