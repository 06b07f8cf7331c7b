/**
 * scripts/install-agent.sh as an operator runs it (as root): it installs the agent, registers the machine, writes
 * a systemd unit whose command really runs the agent, and --uninstall removes it. This machine has no systemd, so
 * the unit is written to a folder of the test's and started by the test with the unit's own ExecStart line.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ROOT, startServer, stopAll, waitOnline, type TestServer } from './support/fixtures.js';

const run = promisify(execFile);
let srv: TestServer;
let dir: string;

beforeAll(async () => {
  srv = await startServer();
  dir = mkdtempSync(join(srv.dir, 'install-'));
}, 120_000);

afterAll(async () => {
  await srv?.stop();
  await stopAll();
  rmSync(dir, { recursive: true, force: true });
});

const asRoot = process.getuid?.() === 0 ? it : it.skip;

asRoot('installs, registers, writes a working unit, and uninstalls', async () => {
  await srv.must('POST', '/api/environments', { name: 'Production' });
  const { token } = await srv.must('POST', '/api/registration-tokens', {
    environmentIds: ['Production'],
    roles: ['web'],
  });
  const paths = { prefix: join(dir, 'opt'), home: join(dir, 'home'), units: join(dir, 'units') };
  const args = [
    '--server',
    srv.base,
    '--token',
    token,
    '--name',
    'svc-01',
    '--roles',
    'web',
    '--environments',
    'Production',
    '--labels',
    'zone=a,rack=r1',
    '--user',
    'root',
    '--prefix',
    paths.prefix,
    '--home',
    paths.home,
    '--unit-dir',
    paths.units,
    '--cache-mb',
    '512',
    '--no-start',
  ];
  const { stdout } = await run('bash', ['scripts/install-agent.sh', ...args], {
    cwd: ROOT,
    env: { ...process.env, NODE_EXTRA_CA_CERTS: '' },
  });
  expect(stdout).toMatch(/registered as svc-01/);
  const unit = readFileSync(join(paths.units, 'cuttle-agent.service'), 'utf8');
  expect(unit).toMatch(/^Restart=on-failure$/m);
  expect(unit).toMatch(/^RestartPreventExitStatus=78$/m);
  expect(unit).toMatch(/^User=root$/m);
  // The package cache's bound reaches the agent's command line (which accepts it: the agent comes online below).
  expect(unit).toMatch(/^ExecStart=.* run --home \S+ --work \S+ --cache-mb 512$/m);
  expect(existsSync(join(paths.home, 'identity.json'))).toBe(true);
  const machines = await srv.must('GET', '/api/machines');
  expect(machines.find((m: any) => m.name === 'svc-01')).toMatchObject({
    roles: ['web'],
    labels: { zone: 'a', rack: 'r1' },
    status: 'offline',
  });

  // The unit's ExecStart, run as systemd would run it, brings the machine online.
  const exec = /^ExecStart=(.+)$/m.exec(unit)![1].split(' ');
  const agent = spawn(exec[0], exec.slice(1), { stdio: 'ignore', detached: true });
  try {
    await waitOnline(srv, ['svc-01']);
  } finally {
    process.kill(-agent.pid!, 'SIGTERM');
    await new Promise((r) => agent.once('exit', r));
  }

  // Installing again keeps the identity (no token needed; --labels is said to apply at registration only);
  // uninstall removes the program and the unit.
  const again = await run(
    'bash',
    [
      'scripts/install-agent.sh',
      '--server',
      srv.base,
      '--labels',
      'zone=b',
      '--user',
      'root',
      '--prefix',
      paths.prefix,
      '--home',
      paths.home,
      '--unit-dir',
      paths.units,
      '--no-start',
    ],
    { cwd: ROOT },
  );
  expect(again.stderr).toMatch(/--labels applies at registration only/);
  expect((await srv.must('GET', '/api/machines')).find((m: any) => m.name === 'svc-01').labels).toEqual({
    zone: 'a',
    rack: 'r1',
  });
  await run(
    'bash',
    [
      'scripts/install-agent.sh',
      '--uninstall',
      '--prefix',
      paths.prefix,
      '--home',
      paths.home,
      '--unit-dir',
      paths.units,
      '--user',
      'root',
      '--no-start',
    ],
    { cwd: ROOT },
  );
  expect(existsSync(join(paths.units, 'cuttle-agent.service'))).toBe(false);
  expect(existsSync(paths.prefix)).toBe(false);
  expect(existsSync(join(paths.home, 'identity.json'))).toBe(true);
  await run(
    'bash',
    [
      'scripts/install-agent.sh',
      '--uninstall',
      '--purge',
      '--prefix',
      paths.prefix,
      '--home',
      paths.home,
      '--unit-dir',
      paths.units,
      '--user',
      'root',
      '--no-start',
    ],
    { cwd: ROOT },
  );
  expect(existsSync(paths.home)).toBe(false);
});
