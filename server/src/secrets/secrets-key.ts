/**
 * Where the secrets key comes from, and the boot checks that make a wrong or missing key stop the server before it
 * listens, never fall back to plaintext and never silently start a second key on data encrypted under the first.
 *
 * The key is CUTTLE_SECRETS_KEY, else `<CUTTLE_HOME>/secrets.key`, made on first start (mode 0600, written atomically).
 * The database remembers which key it belongs to: the `secrets_check` row holds a known value encrypted under the key
 * and the key's fingerprint. At every boot the key must decrypt it.
 *
 * Order at boot (main.ts; `npm run migrate` does the first two steps without making a key):
 * 1. prepareSecretsKey: read the key; check it against the check row if the database has one; with no key at all,
 *    make one only if the database holds no encrypted value (a fresh or pre-encryption database).
 * 2. migrations run with the key (the secrets-at-rest migration encrypts what is stored in plain text).
 * 3. confirmSecretsKey: writes the check row if absent, and verifies it (two nodes starting on one fresh database with
 *    different keys: the second one stops here).
 */
import { chmodSync, existsSync, linkSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { isEncrypted, newKey, parseKey, SecretBox } from './secret-box.js';

export const KEY_FILE = 'secrets.key';
const CONNECT_TRIES = 10;
const CONNECT_DELAY_MS = 3_000;
/** What the check row holds encrypted: any fixed text; decrypting it proves the key. */
export const CHECK_PLAINTEXT = 'cuttle-secrets-check';

/** The server must not start: the message names CUTTLE_SECRETS_KEY and the key file, and says what to do. */
export class SecretsKeyError extends Error {}

export interface SecretsKey {
  box: SecretBox;
  /** Where it came from, for messages: `CUTTLE_SECRETS_KEY` or the key file's path. */
  source: string;
  /** The key file this boot created (removed again if the database turns out to belong to another key). */
  createdFile?: string;
}

/** The key file's contents (64 hex characters), refused if the file is readable or writable by anyone but its owner. */
function readKeyFile(file: string): SecretBox {
  const mode = statSync(file).mode & 0o777;
  // As ssh does with a private key: a key others can read is no longer a secret; say so instead of using it.
  if (mode & 0o077)
    throw new SecretsKeyError(
      `the secrets key file ${file} is accessible by other users (mode ${mode.toString(8).padStart(4, '0')}): run chmod 600 ${file}, or set CUTTLE_SECRETS_KEY instead`,
    );
  const key = parseKey(readFileSync(file, 'utf8'));
  if (!key)
    throw new SecretsKeyError(
      `the secrets key file ${file} does not hold a key (64 hex characters or base64 of 32 bytes); restore it from a backup, or set CUTTLE_SECRETS_KEY`,
    );
  return new SecretBox(key);
}

/**
 * Writes a new key file atomically: a temporary file with mode 0600, then a hard link to the final name, which fails
 * if another process (a second node sharing the folder) made one first: then that one is used.
 */
function createKeyFile(file: string): { box: SecretBox; created: boolean } {
  const tmp = `${file}.${process.pid}.tmp`;
  const key = newKey();
  writeFileSync(tmp, key.toString('hex') + '\n', { mode: 0o600, flag: 'w' });
  chmodSync(tmp, 0o600); // the umask cannot widen it, but an existing tmp file kept its old mode
  try {
    linkSync(tmp, file);
    return { box: new SecretBox(key), created: true };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    return { box: readKeyFile(file), created: false };
  } finally {
    unlinkSync(tmp);
  }
}

interface CheckRow {
  value: string;
  fingerprint: string;
}

/**
 * One connection for the checks. Connecting is retried as TypeORM does at boot (10 tries, 3 s apart), so a server
 * started with its database (a compose file) waits for it as before.
 */
async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  let c: pg.Client;
  for (let attempt = 1; ; attempt++) {
    c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 15_000 });
    try {
      await c.connect();
      break;
    } catch (e) {
      await c.end().catch(() => undefined);
      if (attempt >= CONNECT_TRIES) throw e;
      await sleep(CONNECT_DELAY_MS);
    }
  }
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

async function readCheck(c: pg.Client): Promise<CheckRow | null> {
  const [t] = (await c.query(`SELECT to_regclass('secrets_check') IS NOT NULL AS present`)).rows;
  if (!t.present) return null;
  const [row] = (await c.query(`SELECT value, fingerprint FROM secrets_check WHERE id = 1`)).rows;
  return row ?? null;
}

/** Whether the database holds any encrypted value (the check row is missing, but data may not be fresh). */
async function holdsCiphertext(c: pg.Client): Promise<boolean> {
  const probes: Array<[string, string]> = [
    ['projects', `SELECT 1 FROM projects WHERE variables::text LIKE '%"enc:v1:%' LIMIT 1`],
    ['releases', `SELECT 1 FROM releases WHERE variables::text LIKE '%"enc:v1:%' LIMIT 1`],
    ['output_variables', `SELECT 1 FROM output_variables WHERE value LIKE 'enc:v1:%' LIMIT 1`],
  ];
  for (const [table, sql] of probes) {
    const [t] = (await c.query(`SELECT to_regclass($1) IS NOT NULL AS present`, [table])).rows;
    if (t.present && (await c.query(sql)).rows.length) return true;
  }
  return false;
}

function verify(box: SecretBox, check: CheckRow, source: string, keyFile: string): void {
  if (isOtherKeysCheck(box, check.value))
    throw new SecretsKeyError(
      `the secrets key from ${source} (fingerprint ${box.fingerprint}) is not the key this database's secrets are encrypted with (fingerprint ${check.fingerprint}). Set CUTTLE_SECRETS_KEY to that key, or put it in ${keyFile}; every server node on one database needs the same key`,
    );
}

/**
 * Step 1 (before migrations): the key, checked against the database. `create`: make a key file when there is no key
 * and the database holds no encrypted value (the server does; `npm run migrate` does not, and then encrypts nothing).
 */
export async function prepareSecretsKey(o: {
  home: string;
  envKey?: Buffer;
  databaseUrl: string;
  create: boolean;
}): Promise<SecretsKey | undefined> {
  const file = join(o.home, KEY_FILE);
  let key: SecretsKey | undefined;
  if (o.envKey) key = { box: new SecretBox(o.envKey), source: 'CUTTLE_SECRETS_KEY' };
  else if (existsSync(file)) key = { box: readKeyFile(file), source: file };
  return withClient(o.databaseUrl, async (c) => {
    const check = await readCheck(c);
    if (key) {
      if (check) verify(key.box, check, key.source, file);
      return key;
    }
    if (check || (await holdsCiphertext(c)))
      throw new SecretsKeyError(
        `this database holds encrypted secrets${check ? ` (key fingerprint ${check.fingerprint})` : ''} but no key was given: set CUTTLE_SECRETS_KEY to the key, or restore ${file}. A new key is not made, since it could not read them`,
      );
    if (!o.create) return undefined;
    const made = createKeyFile(file);
    return { box: made.box, source: file, createdFile: made.created ? file : undefined };
  });
}

/** Step 3 (after migrations): records the key in a database that has no check row yet, then verifies the row. */
export async function confirmSecretsKey(key: SecretsKey, databaseUrl: string, home: string): Promise<void> {
  const file = join(home, KEY_FILE);
  try {
    await withClient(databaseUrl, async (c) => {
      await c.query(
        `INSERT INTO secrets_check (id, value, fingerprint) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING`,
        [key.box.encrypt(CHECK_PLAINTEXT), key.box.fingerprint],
      );
      const check = await readCheck(c);
      if (!check) throw new SecretsKeyError('the secrets_check row could not be written');
      verify(key.box, check, key.source, file);
    });
  } catch (e) {
    // A key made by this boot that lost to another node's: nothing is encrypted under it, so it goes.
    if (e instanceof SecretsKeyError && key.createdFile) unlinkSync(key.createdFile);
    throw e;
  }
}

/** Whether a check row's value is not this key's (another key's, or not a value this server wrote). */
export function isOtherKeysCheck(box: SecretBox, value: unknown): boolean {
  if (!isEncrypted(value)) return true;
  try {
    return box.decrypt(value) !== CHECK_PLAINTEXT;
  } catch {
    return true;
  }
}
