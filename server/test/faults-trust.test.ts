/**
 * Fault suite, trust: who may talk to the agent port and the API. Revoked, forged, expired and unknown certificates,
 * spent and expired registration tokens, API keys, and an agent that refuses a server it was not pinned to.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import forge from 'node-forge';
import pg from 'pg';
import { io } from 'socket.io-client';
import { startAgent, startServer, stopAll, waitOnline, type TestServer } from './support/fixtures.js';

let srv: TestServer;
let env: string;
const tally = { tried: 0, refused: 0 };

beforeAll(async () => {
  srv = await startServer();
  env = (await srv.must('POST', '/api/environments', { name: 'Trust' })).id;
}, 120_000);

afterAll(async () => {
  await srv?.stop();
  await stopAll();
  process.stdout.write(
    `\nfault summary [trust]: forged, expired, unknown or revoked identities tried ${tally.tried}, refused ${tally.refused}, let in ${tally.tried - tally.refused}\n`,
  );
});

const keyPair = () =>
  generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });

/** A client certificate, signed by `issuer` (our CA's key and cert by default: a real, valid signature). */
function clientCert(
  cn: string,
  opts: { issuerKey?: string; issuerCert?: string; notAfter?: Date; notBefore?: Date } = {},
) {
  const keys = keyPair();
  const caCert = forge.pki.certificateFromPem(opts.issuerCert ?? srv.ca);
  const caKey = forge.pki.privateKeyFromPem(opts.issuerKey ?? readFileSync(join(srv.home, 'pki', 'ca.key'), 'utf8'));
  const c = forge.pki.createCertificate();
  c.publicKey = forge.pki.publicKeyFromPem(keys.publicKey);
  c.serialNumber = '0' + randomBytes(8).toString('hex');
  c.validity.notBefore = opts.notBefore ?? new Date(Date.now() - 60_000);
  c.validity.notAfter = opts.notAfter ?? new Date(Date.now() + 86400_000);
  c.setSubject([{ name: 'commonName', value: cn }]);
  c.setIssuer(caCert.subject.attributes);
  c.setExtensions([{ name: 'extKeyUsage', clientAuth: true }]);
  c.sign(caKey, forge.md.sha256.create());
  return { key: keys.privateKey, cert: forge.pki.certificateToPem(c) };
}

function selfSignedCa() {
  const keys = keyPair();
  const c = forge.pki.createCertificate();
  c.publicKey = forge.pki.publicKeyFromPem(keys.publicKey);
  c.serialNumber = '01';
  c.validity.notBefore = new Date(Date.now() - 60_000);
  c.validity.notAfter = new Date(Date.now() + 86400_000);
  const attrs = [{ name: 'commonName', value: forge.pki.certificateFromPem(srv.ca).subject.getField('CN').value }];
  c.setSubject(attrs);
  c.setIssuer(attrs);
  c.setExtensions([{ name: 'basicConstraints', cA: true }]);
  c.sign(forge.pki.privateKeyFromPem(keys.privateKey), forge.md.sha256.create());
  return { key: keys.privateKey, cert: forge.pki.certificateToPem(c) };
}

/**
 * Tries a socket.io connection to the agent port with this identity; resolves 'connected' or the refusal. A
 * legitimate identity (`hostile: false`) is not counted in the tally.
 */
function tryConnect(identity: { key: string; cert: string }, hostile = true): Promise<string> {
  if (hostile) tally.tried++;
  return new Promise((resolve) => {
    const s = io(`https://127.0.0.1:${srv.agentPort}`, {
      transports: ['websocket'],
      reconnection: false,
      ca: srv.ca,
      key: identity.key,
      cert: identity.cert,
      rejectUnauthorized: true,
      timeout: 5_000,
    });
    const done = (r: string) => {
      s.close();
      if (hostile && r !== 'connected') tally.refused++;
      resolve(r);
    };
    s.on('connect', () => done('connected'));
    s.on('connect_error', (e) => done(`refused: ${e.message}`));
  });
}

async function token(extra: Record<string, unknown> = {}) {
  return (await srv.must('POST', '/api/registration-tokens', { environmentIds: [env], roles: ['t'], ...extra }))
    .token as string;
}

function csr(name: string) {
  const k = keyPair();
  const c = forge.pki.createCertificationRequest();
  c.publicKey = forge.pki.publicKeyFromPem(k.publicKey);
  c.setSubject([{ name: 'commonName', value: name }]);
  c.sign(forge.pki.privateKeyFromPem(k.privateKey), forge.md.sha256.create());
  return forge.pki.certificationRequestToPem(c);
}
const register = (tok: string, name: string) =>
  srv.request('POST', '/api/agents/register', { token: tok, name, roles: ['t'], csr: csr(name) }, { key: null });

describe('agent port', () => {
  // A revoked machine is disconnected at once (its agent gives up with exit code 78) and refused from then on.
  it('drops and refuses a revoked machine', async () => {
    const agent = startAgent(srv, { name: 't-1', roles: ['t'], environments: ['Trust'], token: await token() });
    const [m] = (await waitOnline(srv, ['t-1'])).filter((x: any) => x.name === 't-1');
    const identity = {
      key: readFileSync(join(agent.home, 'agent.key'), 'utf8'),
      cert: readFileSync(join(agent.home, 'agent.crt'), 'utf8'),
    };
    expect(await tryConnect(identity, false)).toBe('connected');
    const t0 = Date.now();
    await srv.must('DELETE', `/api/machines/${m.id}`);
    expect(await agent.exitCode(20_000)).toBe(78);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(agent.log()).toMatch(/revoked or is unknown to the server/);
    expect(await tryConnect(identity)).toBe('refused: certificate is not that of a known machine');
    expect((await srv.request('GET', `/api/machines/${m.id}`)).status).toBe(404);
    // The host registered again (a new key, a new certificate) may take the revoked machine's name; the old
    // certificate stays refused; a second machine of that name is refused while the first is not revoked.
    const again = await register(await token(), 't-1');
    expect(again.status).toBe(201);
    expect(again.body.machineId).not.toBe(m.id);
    expect(await tryConnect(identity)).toBe('refused: certificate is not that of a known machine');
    const twice = await register(await token(), 't-1');
    expect([twice.status, twice.body.code]).toEqual([409, 'already_exists']);
    await srv.must('DELETE', `/api/machines/${again.body.machineId}`);
  });

  // A certificate from another CA, even one with our CA's name and a known machine's CN, fails the TLS handshake.
  it('refuses a certificate from another CA', async () => {
    const other = selfSignedCa();
    const forged = clientCert('t-1', { issuerKey: other.key, issuerCert: other.cert });
    expect(await tryConnect(forged)).toMatch(/^refused/);
  });

  // An expired certificate from our own CA is refused.
  it('refuses an expired certificate', async () => {
    const expired = clientCert('t-1', {
      notBefore: new Date(Date.now() - 2 * 86400_000),
      notAfter: new Date(Date.now() - 86400_000),
    });
    expect(await tryConnect(expired)).toMatch(/^refused/);
  });

  // A valid certificate of our CA whose fingerprint belongs to no machine is refused by the fingerprint check, on
  // the socket and on package downloads.
  it('refuses a valid certificate that is not a known machine', async () => {
    const stray = clientCert('not-registered');
    expect(await tryConnect(stray)).toBe('refused: certificate is not that of a known machine');
    const { request } = await import('node:https');
    const status = await new Promise<number>((resolve, reject) => {
      request(
        `https://127.0.0.1:${srv.agentPort}/packages/${'a'.repeat(64)}`,
        { ca: srv.ca, key: stray.key, cert: stray.cert },
        (r) => {
          r.resume();
          resolve(r.statusCode ?? 0);
        },
      )
        .on('error', reject)
        .end();
    });
    tally.tried++;
    if (status === 403) tally.refused++;
    expect(status).toBe(403);
  });
});

describe('registration tokens', () => {
  // maxUses is spent one registration at a time; an expired, unknown, or foreign token is refused.
  it('spends uses, expires, and refuses unknown tokens', async () => {
    const two = await token({ maxUses: 2 });
    expect((await register(two, 'u-1')).status).toBe(201);
    expect((await register(two, 'u-2')).status).toBe(201);
    const third = await register(two, 'u-3');
    expect([third.status, third.body.message]).toEqual([401, 'token has been used up']);
    const short = await token({ expiresInSeconds: 1 });
    await new Promise((r) => setTimeout(r, 1_500));
    const late = await register(short, 'u-4');
    expect([late.status, late.body.message]).toEqual([401, 'token has expired']);
    const [, fp, secret] = two.split('.');
    expect((await register(`cuttle1.${fp}.${secret.replace(/^.{4}/, 'AAAA')}`, 'u-5')).body.message).toBe(
      'token is unknown',
    );
    expect((await register(`cuttle1.${'0'.repeat(64)}.${secret}`, 'u-6')).body.message).toBe(
      'token is not a registration token of this server',
    );
    expect((await register('garbage', 'u-7')).status).toBe(401);
    tally.tried += 5;
    tally.refused += 5;
  });

  // The agent checks the server's CA against the token's pin before sending anything: a mismatch stops it (exit
  // 78), and the token is not spent, so a correct run with it still registers.
  it('is not sent to a server whose CA does not match the pin', async () => {
    const tok = await token({ maxUses: 1 });
    const [, , secret] = tok.split('.');
    const wrong = startAgent(srv, {
      name: 'pin-1',
      roles: ['t'],
      environments: ['Trust'],
      token: `cuttle1.${'ab'.repeat(32)}.${secret}`,
    });
    expect(await wrong.exitCode(30_000)).toBe(78);
    expect(wrong.log()).toMatch(/does not match the token's pin/);
    tally.tried++;
    tally.refused++;
    const right = startAgent(srv, { name: 'pin-2', roles: ['t'], environments: ['Trust'], token: tok });
    await waitOnline(srv, ['pin-2']);
    expect((await srv.must('GET', '/api/machines')).map((m: any) => m.name)).not.toContain('pin-1');
    await right.stop();
  });
});

describe('API keys', () => {
  // Keys are created (shown once), listed without the key, stored hashed, and refused once revoked; the admin key
  // cannot be revoked through the API.
  it('creates, lists, revokes, and stores only hashes', async () => {
    const created = await srv.must('POST', '/api/api-keys', { name: 'ci-pipeline' });
    expect(created.key).toMatch(/^ck_/);
    expect((await srv.request('GET', '/api/environments', undefined, { key: created.key })).status).toBe(200);
    const list = await srv.must('GET', '/api/api-keys');
    expect(list.map((k: any) => k.name)).toEqual(expect.arrayContaining(['admin', 'ci-pipeline']));
    expect(JSON.stringify(list)).not.toContain(created.key);
    expect(list.every((k: any) => !('key' in k) && !('keyHash' in k))).toBe(true);
    if (process.env.DATABASE_URL && srv.databaseName) {
      const u = new URL(process.env.DATABASE_URL);
      u.pathname = `/${srv.databaseName}`;
      const c = new pg.Client({ connectionString: u.toString() });
      await c.connect();
      const rows = (await c.query('SELECT key_hash FROM api_keys')).rows;
      await c.end();
      expect(JSON.stringify(rows)).not.toContain(created.key);
      expect(rows.every((r: any) => /^[a-f0-9]{64}$/.test(r.key_hash))).toBe(true);
    }
    expect((await srv.request('DELETE', `/api/api-keys/${created.id}`)).status).toBe(204);
    const after = await srv.request('GET', '/api/environments', undefined, { key: created.key });
    expect([after.status, after.body.message]).toEqual([401, 'X-Api-Key is not a valid API key']);
    const admin = list.find((k: any) => k.name === 'admin');
    expect((await srv.request('DELETE', `/api/api-keys/${admin.id}`)).status).toBe(409);
    expect((await srv.request('GET', '/api/environments', undefined, { key: 'ck_forged' })).status).toBe(401);
    tally.tried += 2;
    tally.refused += 2;
  });
});
