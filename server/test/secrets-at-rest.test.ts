/**
 * Sensitive values at rest, as an operator and an attacker with a copy of the database would see them: the database
 * (a pg_dump on PostgreSQL, the raw files of the embedded database's folder) holds no sensitive value in plain text,
 * while deployments still get them substituted and logs mask them; a server with the wrong key, or none, refuses to
 * boot naming CUTTLE_SECRETS_KEY; values an earlier version stored in plain text are encrypted by the migration.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, renameSync, statSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { PGlite } from '@electric-sql/pglite';
import { withDatabase } from './support/pg-admin.js';
import {
  createProject,
  runServerExpectingExit,
  startAgent,
  startServer,
  stopAll,
  waitOnline,
  type TestAgent,
  type TestServer,
} from './support/fixtures.js';

// Long and random: no compression or coincidence hides it from, or fakes it into, a byte search.
const secret = () => `S${randomBytes(24).toString('hex')}`;
const SECRET = secret();
const SECRET_OUT = secret();
const VISIBLE = `V${randomBytes(24).toString('hex')}`; // non-sensitive: the control that the search finds values
const MASK = '********';

let srv: TestServer;
let agent: TestAgent;
let env: string;
let projectId: string;
let releases = 0;

/** Every file under a folder. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? filesUnder(p) : [p];
  });
}

/**
 * SQL on the server's database, as someone with access to it: on PostgreSQL a client of its own; on the embedded
 * database the data folder opened in this process, so the server must be stopped.
 */
async function sql(query: string, params: unknown[] = []): Promise<any[]> {
  if (process.env.DATABASE_URL) {
    const c = new pg.Client({ connectionString: withDatabase(process.env.DATABASE_URL, srv.databaseName!) });
    await c.connect();
    try {
      return (await c.query(query, params)).rows;
    } finally {
      await c.end();
    }
  }
  const db = await PGlite.create(join(srv.home, 'db'));
  try {
    return (await db.query(query, params)).rows as any[];
  } finally {
    await db.close();
  }
}

/** A release of the project, deployed; returns the finished deployment, the file the script wrote, and the log. */
async function deploy() {
  const rel = await srv.must('POST', '/api/releases', { projectId, version: `1.0.${++releases}` });
  const dep = await srv.must('POST', '/api/deployments', { releaseId: rel.id, environmentId: env });
  const done = await srv.waitDeployment(dep.id);
  const log = (await srv.readLog(dep.id)).map((e: any) => e.text as string);
  expect({ state: done.state, log }).toMatchObject({ state: 'success' });
  return {
    file: readFileSync(join(agent.home, 'secret.txt'), 'utf8'),
    out: readFileSync(join(agent.home, 'out.txt'), 'utf8'),
    log,
  };
}

beforeAll(async () => {
  srv = await startServer();
  env = (await srv.must('POST', '/api/environments', { name: 'Prod' })).id;
  const { token } = await srv.must('POST', '/api/registration-tokens', { environmentIds: [env], roles: ['app'] });
  agent = startAgent(srv, { name: 'app-01', roles: ['app'], environments: [env], token });
  await waitOnline(srv, ['app-01']);
  const home = agent.home;
  const p = await createProject(srv, 'Secrets', [
    {
      name: 'Write',
      targetRoles: ['app'],
      actions: [
        {
          name: 'Secret',
          type: 'script',
          // The sensitive output variable is made on the target: its value never appears in the process.
          script: [
            `printf '%s' "#{DbPassword}" > '${home}/secret.txt'`,
            'echo "password is #{DbPassword}, color is #{Color}"',
            `printf '%s' "$(cat '${home}/next-out.txt')" > '${home}/out.txt'`,
            `set_cuttle_variable Token "$(cat '${home}/next-out.txt')" sensitive`,
          ].join('\n'),
        },
      ],
    },
    {
      name: 'Use',
      targetRoles: ['app'],
      actions: [
        { name: 'Echo', type: 'script', script: 'echo "token is #{Cuttle.Action[Write.Secret].Output.Token}"' },
      ],
    },
  ]);
  projectId = p.id;
  spawnSync('sh', ['-c', `printf '%s' '${SECRET_OUT}' > '${home}/next-out.txt'`]);
}, 150_000);

afterAll(async () => {
  await agent?.stop();
  await srv?.stop();
  await stopAll();
});

describe('secrets at rest', () => {
  // First start makes <home>/secrets.key, readable by its owner only.
  it('makes a key file of mode 0600 on first start', () => {
    const file = join(srv.home, 'secrets.key');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readFileSync(file, 'utf8').trim()).toMatch(/^[0-9a-f]{64}$/);
  });

  // A malformed CUTTLE_SECRETS_KEY stops the server like any invalid variable, without repeating the value.
  it('refuses a malformed CUTTLE_SECRETS_KEY', async () => {
    const bad = `not-a-key-${randomBytes(8).toString('hex')}`;
    const r = await runServerExpectingExit({ CUTTLE_SECRETS_KEY: bad, DATABASE_URL: '' });
    expect(r.code).toBe(2);
    expect(r.output).toContain('CUTTLE_SECRETS_KEY must be 32 bytes written as 64 hex characters or as base64');
    expect(r.output).not.toContain(bad);
  });

  // The API masks the secret; sending the mask back keeps it; a deployment gets it substituted, the log masks it.
  it('substitutes a sensitive value that the API never shows', async () => {
    await srv.must('PUT', `/api/projects/${projectId}/variables`, {
      variables: [
        { name: 'DbPassword', value: SECRET, sensitive: true },
        { name: 'Color', value: 'blue' },
      ],
    });
    const got = await srv.must('GET', `/api/projects/${projectId}/variables`);
    expect(got.variables).toContainEqual({ name: 'DbPassword', value: MASK, sensitive: true });
    // Edited without knowing the secret: the masked value goes back as it came.
    await srv.must('PUT', `/api/projects/${projectId}/variables`, {
      variables: [...got.variables.filter((v: any) => v.name !== 'Color'), { name: 'Color', value: VISIBLE }],
    });
    const { file, out, log } = await deploy();
    expect(file).toBe(SECRET);
    expect(out).toBe(SECRET_OUT);
    expect(log).toContain(`password is ${MASK}, color is ${VISIBLE}`);
    expect(log).toContain(`token is ${MASK}`);
    expect(log.join('\n')).not.toContain(SECRET);
    expect(log.join('\n')).not.toContain(SECRET_OUT);
  });

  // Where sensitive values are stored, the columns hold enc:v1: strings; names, scopes and other values stay readable.
  it('stores sensitive values encrypted', async () => {
    if (!process.env.DATABASE_URL) await srv.stop({ keepData: true });
    const [project] = await sql(`SELECT variables FROM projects WHERE id = $1`, [projectId]);
    const rels = await sql(`SELECT variables FROM releases WHERE project_id = $1`, [projectId]);
    const outputs = await sql(`SELECT name, value, sensitive FROM output_variables`);
    const check = await sql(`SELECT value, fingerprint FROM secrets_check`);
    for (const vars of [project.variables, ...rels.map((r: any) => r.variables)]) {
      expect(vars.find((v: any) => v.name === 'DbPassword').value).toMatch(/^enc:v1:/);
      expect(vars.find((v: any) => v.name === 'Color').value).toBe(VISIBLE);
    }
    expect(outputs.find((o: any) => o.name === 'Token')).toMatchObject({
      sensitive: true,
      value: expect.stringMatching(/^enc:v1:/),
    });
    expect(check).toHaveLength(1);
    expect(check[0].value).toMatch(/^enc:v1:/);
  });

  // A copy of the whole database holds neither secret in plain text, though it does hold the non-sensitive value
  // (the control: the search would find a plain value): pg_dump on PostgreSQL, every file of the embedded data folder.
  it('leaves no sensitive value in plain text in a database dump', async () => {
    let dump: Buffer;
    if (process.env.DATABASE_URL) {
      const r = spawnSync('pg_dump', ['--dbname', withDatabase(process.env.DATABASE_URL, srv.databaseName!)], {
        maxBuffer: 256 * 1024 * 1024,
      });
      if (r.error) {
        console.warn(
          `pg_dump is not installed (${r.error.message}): the dump check is skipped; the columns were checked`,
        );
        return;
      }
      expect(r.status).toBe(0);
      dump = r.stdout;
    } else {
      // The server is stopped (previous test): its files are complete. Data pages and the write-ahead log alike.
      dump = Buffer.concat(filesUnder(join(srv.home, 'db')).map((f) => readFileSync(f)));
    }
    expect(dump.includes(VISIBLE)).toBe(true);
    expect(dump.includes(SECRET)).toBe(false);
    expect(dump.includes(SECRET_OUT)).toBe(false);
  });

  // A wrong key, or none where the database holds secrets, stops the server before it listens, naming
  // CUTTLE_SECRETS_KEY; a key file others can read is refused too. Never a start that cannot read its secrets.
  it('refuses to boot with a wrong or missing key', async () => {
    if (process.env.DATABASE_URL) await srv.stop({ keepData: true });
    const wrong = randomBytes(32).toString('hex');
    await expect(startServer({ reuse: srv, env: { CUTTLE_SECRETS_KEY: wrong } })).rejects.toThrow(
      /exited with 2:[\s\S]*CUTTLE_SECRETS_KEY[\s\S]*is not the key this database's secrets are encrypted with/,
    );
    const file = join(srv.home, 'secrets.key');
    const key = readFileSync(file, 'utf8').trim();
    renameSync(file, `${file}.away`);
    await expect(startServer({ reuse: srv })).rejects.toThrow(
      /exited with 2:[\s\S]*holds encrypted secrets[\s\S]*but no key was given: set CUTTLE_SECRETS_KEY/,
    );
    // No new key was made for a database that has one already.
    expect(existsSync(file)).toBe(false);
    renameSync(`${file}.away`, file);
    chmodSync(file, 0o644);
    await expect(startServer({ reuse: srv })).rejects.toThrow(/exited with 2:[\s\S]*accessible by other users/);
    chmodSync(file, 0o600);
    // The same key given as CUTTLE_SECRETS_KEY (base64 this time) is the right key.
    srv = await startServer({ reuse: srv, env: { CUTTLE_SECRETS_KEY: Buffer.from(key, 'hex').toString('base64') } });
    await waitOnline(srv, ['app-01'], 60_000);
    const { file: written } = await deploy();
    expect(written).toBe(SECRET);
  });

  // A database from before encryption (plain sensitive values, the migration not applied) is encrypted at boot, and
  // its deployments still get the values.
  it('encrypts what an earlier version stored in plain text', async () => {
    const old = secret();
    await srv.stop({ keepData: true });
    const [project] = await sql(`SELECT variables FROM projects WHERE id = $1`, [projectId]);
    const plain = project.variables.map((v: any) => (v.name === 'DbPassword' ? { ...v, value: old } : v));
    await sql(`UPDATE projects SET variables = $1::jsonb WHERE id = $2`, [JSON.stringify(plain), projectId]);
    await sql(`UPDATE output_variables SET value = 'plain-old-token' WHERE sensitive`);
    await sql(`DELETE FROM migrations WHERE name = 'SecretsAtRest1764129600000'`);
    srv = await startServer({ reuse: srv });
    await waitOnline(srv, ['app-01'], 60_000);
    const { file } = await deploy();
    expect(file).toBe(old);
    if (!process.env.DATABASE_URL) await srv.stop({ keepData: true });
    const [after] = await sql(`SELECT variables FROM projects WHERE id = $1`, [projectId]);
    expect(after.variables.find((v: any) => v.name === 'DbPassword').value).toMatch(/^enc:v1:/);
    expect((await sql(`SELECT value FROM output_variables WHERE sensitive`)).map((r: any) => r.value)).toEqual(
      expect.arrayContaining([expect.stringMatching(/^enc:v1:/)]),
    );
    expect(JSON.stringify(await sql(`SELECT value FROM output_variables`))).not.toContain('plain-old-token');
  });
});
