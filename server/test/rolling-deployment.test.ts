/**
 * The end-to-end path with real parts: a server process, four agent processes registered with a token over mutual
 * TLS, a real tarball, real bash. Everything is driven through the REST API of docs/api.md.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { connect } from 'node:tls';
import { join } from 'node:path';
import { generateKeyPairSync } from 'node:crypto';
import forge from 'node-forge';
import {
  makeTarGz,
  maxOverlap,
  startAgent,
  startServer,
  stopAll,
  waitOnline,
  type TestAgent,
  type TestServer,
} from './support/fixtures.js';

let srv: TestServer;
let agents: TestAgent[];
let envId: string;
const NAMES = ['web-01', 'web-02', 'web-03', 'web-04'];

beforeAll(async () => {
  srv = await startServer();
  envId = (await srv.must('POST', '/api/environments', { name: 'Test' })).id;
  const { token } = await srv.must('POST', '/api/registration-tokens', {
    environmentIds: [envId],
    roles: ['web'],
    maxUses: 4,
  });
  agents = NAMES.map((name) => startAgent(srv, { name, roles: ['web'], environments: ['Test'], token }));
  await waitOnline(srv, NAMES);
}, 120_000);

afterAll(async () => {
  await Promise.all((agents ?? []).map((a) => a.stop()));
  await srv?.stop();
  await stopAll();
});

async function project(name: string, steps: unknown[]) {
  const p = await srv.must('POST', '/api/projects', { name });
  const proc = await srv.must('GET', `/api/projects/${p.id}/deployment-process`);
  await srv.must('PUT', `/api/projects/${p.id}/deployment-process`, { version: proc.version, steps });
  return p;
}

async function deploy(projectId: string, version: string) {
  const rel = await srv.must('POST', '/api/releases', { projectId, version });
  const dep = await srv.must('POST', '/api/deployments', { releaseId: rel.id, environmentId: envId });
  expect(dep.state).toBe('queued');
  return srv.waitDeployment(dep.id);
}

/** Reads `<agent work>/../times-<tag>.log` lines "ACTION start|end MILLIS" written by the scripts. */
function timesOf(a: TestAgent, tag: string) {
  const f = join(a.home, `times-${tag}.log`);
  if (!existsSync(f)) return [];
  return readFileSync(f, 'utf8')
    .trim()
    .split('\n')
    .map((l) => {
      const [action, edge, ms] = l.split(' ');
      return { action, edge, ms: Number(ms) };
    });
}

const record = (tag: string, action: string, sleep: string) =>
  `echo "${action} start $(date +%s%3N)" >> ../times-${tag}.log\necho "${action} on $CUTTLE_MACHINE_NAME"\nsleep ${sleep}\necho "${action} end $(date +%s%3N)" >> ../times-${tag}.log`;

describe('a rolling deployment to four agents', () => {
  // The window holds: never more than 2 targets in flight, 2 at some point; a target's actions run in order; the
  // package lands on disk and its deploy.sh runs; the log arrives complete, in order, without gaps.
  it('rolls a window of 2 with two child actions, then deploys a package', async () => {
    const pkg = await makeTarGz(srv.dir, {
      'deploy.sh': '#!/bin/bash\nset -e\necho "deploy.sh ran in $PWD on $CUTTLE_MACHINE_NAME"\ntouch deployed.marker\n',
      'site/index.html': '<h1>hello from cuttle</h1>\n',
    });
    const up = await srv.must('POST', '/api/packages/site/1.0.0', undefined, [201], {
      raw: pkg,
      headers: { 'content-type': 'application/gzip' },
    });
    expect(up.sha256).toMatch(/^[a-f0-9]{64}$/);
    expect(up.sizeBytes).toBe(pkg.length);

    const p = await project('Rolling', [
      {
        name: 'Web',
        targetRoles: ['web'],
        windowSize: 2,
        actions: [
          { name: 'First', type: 'script', script: record('roll', 'First', '0.8') },
          { name: 'Second', type: 'script', script: record('roll', 'Second', '0.3') },
        ],
      },
      { name: 'Site', targetRoles: ['web'], actions: [{ name: 'Unpack', type: 'package', packageId: 'site' }] },
    ]);
    const d = await deploy(p.id, '1.0.0');
    expect(d.state).toBe('success');
    expect(d.steps.map((s: any) => s.state)).toEqual(['success', 'success']);
    expect(d.steps[0].windowSize).toBe(2);
    for (const s of d.steps) {
      expect(s.targets.map((t: any) => t.machineName)).toEqual(NAMES);
      for (const t of s.targets) {
        expect(t.state).toBe('success');
        expect(t.actions.every((a: any) => a.state === 'success' && a.exitCode === 0)).toBe(true);
      }
    }

    const intervals: Array<[number, number]> = [];
    for (const a of agents) {
      const t = timesOf(a, 'roll');
      const at = (action: string, edge: string) => t.find((x) => x.action === action && x.edge === edge)!.ms;
      expect(t.map((x) => `${x.action} ${x.edge}`)).toEqual(['First start', 'First end', 'Second start', 'Second end']);
      expect(at('First', 'end')).toBeLessThanOrEqual(at('Second', 'start'));
      intervals.push([at('First', 'start'), at('Second', 'end')]);
      // The package: unpacked into a new versioned folder, deploy.sh ran there.
      const dir = join(a.workDir, 'site', '1.0.0');
      expect(readFileSync(join(dir, 'site', 'index.html'), 'utf8')).toContain('hello from cuttle');
      expect(existsSync(join(dir, 'deployed.marker'))).toBe(true);
    }
    expect(maxOverlap(intervals)).toBe(2);

    const log = await srv.readLog(d.id);
    expect(log.map((e: any) => e.seq)).toEqual(log.map((_: unknown, i: number) => i + 1));
    for (const name of NAMES) {
      const machineId = d.steps[0].targets.find((t: any) => t.machineName === name).machineId;
      const lines = log
        .filter((e: any) => e.machineId === machineId && /^(First|Second) on /.test(e.text))
        .map((e: any) => e.text);
      expect(lines).toEqual([`First on ${name}`, `Second on ${name}`]);
      expect(
        log.some(
          (e: any) =>
            e.machineId === machineId &&
            e.text === `deploy.sh ran in ${join(agents[NAMES.indexOf(name)].workDir, 'site', '1.0.0')} on ${name}`,
        ),
      ).toBe(true);
      // The package step's targets were next in line while the first step ran: their agents fetched and unpacked
      // the package ahead (package.prefetch), so the lease found it ready, and no staging folder is left over.
      expect(
        log.some(
          (e: any) =>
            e.machineId === machineId && /^Extracted site 1\.0\.0 to .* \(unpacked ahead of the lease\)$/.test(e.text),
        ),
      ).toBe(true);
      expect(readdirSync(join(agents[NAMES.indexOf(name)].workDir, 'site'))).toEqual(['1.0.0']);
    }
    // The log API pages by cursor: reading after the last seq returns nothing new.
    const tail = await srv.must('GET', `/api/deployments/${d.id}/log?afterSeq=${log.length}`);
    expect(tail).toEqual({ entries: [], nextSeq: log.length });

    // A second deployment of the same package version is unpacked into a new folder (never over the old one).
    const again = await deploy(p.id, '1.0.1');
    expect(again.state).toBe('success');
    expect(existsSync(join(agents[0].workDir, 'site', '1.0.0_1', 'site', 'index.html'))).toBe(true);
  });

  // Results that reach the server together are settled together (one transaction per burst): each target is still
  // stored once, as a success with its action's exit code, its last output line before its outcome line, the log's
  // sequence numbers dense and unique, and every slot free for the next deployment.
  it('stores a burst of results, each once and in order', async () => {
    const deadline = Date.now() + 4_000;
    const p = await project('Burst', [
      {
        name: 'Together',
        targetRoles: ['web'],
        windowSize: 4,
        // Every target ends at the same moment, so their results arrive at once.
        actions: [
          {
            name: 'Wait',
            type: 'script',
            script: `while [ "$(date +%s%3N)" -lt ${deadline} ]; do sleep 0.01; done\necho "last line on $CUTTLE_MACHINE_NAME"`,
          },
        ],
      },
    ]);
    const d = await deploy(p.id, '1.0.0');
    expect(d.state).toBe('success');
    expect(
      d.steps[0].targets.map((t: any) => `${t.machineName}:${t.state}:${t.actions[0].state}:${t.actions[0].exitCode}`),
    ).toEqual(NAMES.map((n) => `${n}:success:success:0`));
    const log = await srv.readLog(d.id);
    expect(log.map((e: any) => e.seq)).toEqual(log.map((_: unknown, i: number) => i + 1));
    for (const name of NAMES) {
      const last = log.filter((e: any) => e.text === `last line on ${name}`);
      const outcome = log.filter((e: any) => e.text === `Together on ${name} succeeded (exit code 0)`);
      expect([last.length, outcome.length]).toEqual([1, 1]);
      expect(last[0].seq).toBeLessThan(outcome[0].seq);
    }
    // The leases were released: the next deployment gets all four slots again.
    expect((await deploy(p.id, '1.0.1')).state).toBe('success');
  });

  // A failing script fails its target; with the default failure budget no further target of the step starts, the
  // deployment fails and later steps are skipped.
  it('fails the target, the step and the deployment when a script fails', async () => {
    const p = await project('Failing', [
      {
        name: 'Web',
        targetRoles: ['web'],
        windowSize: 1,
        actions: [
          {
            name: 'Maybe',
            type: 'script',
            script:
              'echo "running on $CUTTLE_MACHINE_NAME"\nif [ "$CUTTLE_MACHINE_NAME" = web-02 ]; then echo broken >&2; exit 3; fi',
          },
        ],
      },
      {
        name: 'After',
        targetRoles: ['web'],
        actions: [{ name: 'Never', type: 'script', script: 'touch ../after-ran' }],
      },
    ]);
    const d = await deploy(p.id, '1.0.0');
    expect(d.state).toBe('failed');
    expect(d.steps[0].state).toBe('failed');
    expect(d.steps[0].targets.map((t: any) => `${t.machineName}:${t.state}`)).toEqual([
      'web-01:success',
      'web-02:failed',
      'web-03:skipped',
      'web-04:skipped',
    ]);
    expect(d.steps[0].targets[1].actions[0]).toEqual({ name: 'Maybe', state: 'failed', exitCode: 3 });
    expect(d.steps[1].state).toBe('skipped');
    expect(agents.some((a) => existsSync(join(a.home, 'after-ran')))).toBe(false);
    const log = await srv.readLog(d.id);
    expect(log.some((e: any) => e.level === 'error' && e.text === 'broken')).toBe(true);
    expect(log.some((e: any) => e.text.includes('Web on web-02 failed (exit code 3)'))).toBe(true);
    expect(log.some((e: any) => e.text.includes('running on web-03'))).toBe(false);
  });
});

describe('machine health', () => {
  // On demand, the server asks the agent: healthy, with round trip, free disk and version.
  it('checks an agent on demand', async () => {
    const ms = await srv.must('GET', '/api/machines');
    const m = ms.find((x: any) => x.name === 'web-03');
    const r = await srv.must('POST', `/api/machines/${m.id}/health-check`);
    expect(r).toMatchObject({ machineId: m.id, health: 'healthy', agentVersion: '0.1.0' });
    expect(r.freeDiskBytes).toBeGreaterThan(100 * 1024 * 1024);
    expect(r.roundTripMs).toBeLessThan(5_000);
    expect((await srv.must('GET', `/api/machines/${m.id}`)).health).toBe('healthy');
  });
});

describe('the agent port', () => {
  const handshake = (opts: Record<string, unknown>) =>
    new Promise<{ ok: boolean; error?: string }>((resolve) => {
      const s = connect(
        { host: '127.0.0.1', port: srv.agentPort, ca: srv.ca, servername: 'localhost', ...opts },
        () => {
          // TLS 1.3 reports a refused client certificate after the handshake: wait for the server's verdict.
          s.write('GET /packages/' + '0'.repeat(64) + ' HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
        },
      );
      let data = '';
      s.on('data', (c) => (data += c.toString()));
      s.on('error', (e) => resolve({ ok: false, error: e.message }));
      const timer = setTimeout(() => s.destroy(), 5_000);
      s.on('close', () => {
        clearTimeout(timer);
        resolve({ ok: /^HTTP\/1\.1 (200|404)/.test(data), error: data.split('\r\n')[0] });
      });
    });

  // mTLS: no client certificate, no connection.
  it('refuses a client without a certificate', async () => {
    const r = await handshake({});
    expect(r.ok).toBe(false);
  });

  // A certificate from another CA carrying a registered machine's name is refused: trust is the CA plus the
  // fingerprint, never the CN.
  it('refuses a certificate from another CA with a known name', async () => {
    const keys = generateKeyPairSync('rsa', {
      modulusLength: 2048,
      publicKeyEncoding: { type: 'spki', format: 'pem' },
      privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    });
    const cert = forge.pki.createCertificate();
    cert.publicKey = forge.pki.publicKeyFromPem(keys.publicKey);
    cert.serialNumber = '01';
    cert.validity.notBefore = new Date(Date.now() - 60_000);
    cert.validity.notAfter = new Date(Date.now() + 86400_000);
    cert.setSubject([{ name: 'commonName', value: 'web-01' }]);
    cert.setIssuer([{ name: 'commonName', value: 'web-01' }]);
    cert.sign(forge.pki.privateKeyFromPem(keys.privateKey), forge.md.sha256.create());
    const r = await handshake({ key: keys.privateKey, cert: forge.pki.certificateToPem(cert) });
    expect(r.ok).toBe(false);
  });

  // The real agent's certificate does get in: the refusals above are about trust, not a broken port.
  it('accepts a registered agent certificate', async () => {
    const home = agents[0].home;
    const r = await handshake({
      key: readFileSync(join(home, 'agent.key')),
      cert: readFileSync(join(home, 'agent.crt')),
    });
    expect(r).toEqual({ ok: true, error: 'HTTP/1.1 404 Not Found' });
  });
});

describe('registration tokens and bad input', () => {
  // A token is spent by its uses: the fifth registration with a 4-use token is refused.
  it('refuses a used-up token', async () => {
    const { token } = await srv.must('POST', '/api/registration-tokens', { environmentIds: [envId], maxUses: 1 });
    const csr = () => {
      const k = generateKeyPairSync('rsa', {
        modulusLength: 2048,
        publicKeyEncoding: { type: 'spki', format: 'pem' },
        privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
      });
      const c = forge.pki.createCertificationRequest();
      c.publicKey = forge.pki.publicKeyFromPem(k.publicKey);
      c.setSubject([{ name: 'commonName', value: 'x' }]);
      c.sign(forge.pki.privateKeyFromPem(k.privateKey), forge.md.sha256.create());
      return forge.pki.certificationRequestToPem(c);
    };
    const first = await srv.request(
      'POST',
      '/api/agents/register',
      { token, name: 'one-shot', roles: [], csr: csr() },
      { key: null },
    );
    expect(first.status).toBe(201);
    expect(first.body.certificate).toContain('BEGIN CERTIFICATE');
    const second = await srv.request(
      'POST',
      '/api/agents/register',
      { token, name: 'two-shot', roles: [], csr: csr() },
      { key: null },
    );
    expect(second.status).toBe(401);
    expect(second.body.message).toMatch(/used up/);
    await srv.must('DELETE', `/api/machines/${first.body.machineId}`);
  });

  // Invalid processes are refused with 400 naming the field; nothing is saved.
  it('names the offending field of an invalid process', async () => {
    const p = await srv.must('POST', '/api/projects', { name: 'Invalid' });
    const r = await srv.request('PUT', `/api/projects/${p.id}/deployment-process`, {
      version: 1,
      steps: [
        { name: 'A', targetRoles: ['web'], actions: [{ name: 'x', type: 'script', script: 'true' }] },
        { name: 'B', targetRoles: ['web'], windowSize: 'lots', actions: [] },
      ],
    });
    expect(r.status).toBe(400);
    expect(r.body.message).toEqual(
      expect.arrayContaining([
        expect.stringContaining('steps[1].windowSize must be a positive integer or a percentage'),
        expect.stringContaining('steps[1].actions'),
      ]),
    );
    expect((await srv.must('GET', `/api/projects/${p.id}/deployment-process`)).steps).toEqual([]);
  });

  // A package whose entries escape their folder is refused at upload, before any agent sees it.
  it('refuses a tarball with an entry escaping its folder', async () => {
    const { mkdtempSync, writeFileSync, mkdirSync } = await import('node:fs');
    const tar = await import('tar');
    const d = mkdtempSync(join(srv.dir, 'evil-'));
    mkdirSync(join(d, 'a'));
    writeFileSync(join(d, 'evil.txt'), 'x');
    await tar.c({ gzip: true, file: join(d, 'evil.tar.gz'), cwd: join(d, 'a'), preservePaths: true }, ['../evil.txt']);
    const r = await srv.request('POST', '/api/packages/evil/1.0.0', undefined, {
      raw: readFileSync(join(d, 'evil.tar.gz')),
      headers: { 'content-type': 'application/gzip' },
    });
    expect(r.status).toBe(400);
    expect(r.body.message).toMatch(/escapes the package folder/);
    expect((await srv.must('GET', '/api/packages')).some((x: any) => x.packageId === 'evil')).toBe(false);
  });
});
