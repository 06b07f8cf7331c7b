import { setTimeout as delay } from 'node:timers/promises';
import { createHash } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tar from 'tar';
import winston from 'winston';
import type { AgentMessage, LogLine } from '#shared/protocol/index.js';
import { Journal } from '../journal/journal.js';
import { LeaseManager } from '../leases/lease-manager.js';
import { PackageStore } from '../packages/package-store.js';
import { HOLLOW_LINE, hollowRunner } from './hollow.js';

const silent = winston.createLogger({ silent: true });
let dir: string;
beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'cuttle-hollow-'))));
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function hollow(archive?: string) {
  const sent: AgentMessage[] = [];
  const downloads: boolean[] = [];
  const lm = new LeaseManager({
    journal: new Journal(join(dir, 'journal')),
    packages: new PackageStore(join(dir, 'packages')),
    workDir: join(dir, 'work'),
    scriptDir: join(dir, 'tmp'),
    machineId: 'm1',
    send: (m) => (sent.push(m), true),
    download: async (_sha, dest, prefetch) => {
      downloads.push(!!prefetch);
      copyFileSync(archive!, dest);
    },
    logger: silent,
    warmShells: true, // asked for, and still no shell: the hollow runner starts no process
    runner: hollowRunner,
  });
  mkdirSync(join(dir, 'work'), { recursive: true });
  return { lm, sent, downloads };
}

const waitResult = async (sent: AgentMessage[], leaseId: string) => {
  for (const t0 = Date.now(); Date.now() - t0 < 10_000; await delay(10)) {
    const r = sent.find((m) => m.type === 'lease.result' && m.leaseId === leaseId);
    if (r && r.type === 'lease.result') return r;
  }
  throw new Error(`no result for ${leaseId}`);
};

const linesOf = (sent: AgentMessage[], leaseId: string): LogLine[] =>
  sent.flatMap((m) =>
    m.type === 'lease.log' && m.leaseId === leaseId
      ? m.lines
      : m.type === 'lease.result' && m.leaseId === leaseId
        ? (m.lines ?? [])
        : [],
  );

describe('hollow runner', () => {
  // A script action succeeds at once with one line of output, and nothing is run: the script would have made a
  // file, and no script or variables file is written.
  it('succeeds a script action with one log line and runs nothing', async () => {
    const { lm, sent } = hollow();
    const marker = join(dir, 'ran');
    lm.offer({
      type: 'lease.offer',
      leaseId: 'l1',
      deploymentId: 'd1',
      targetRunId: 't1',
      stepName: 'S',
      machineName: 'web-01',
      actions: [{ index: 0, name: 'a', type: 'script', script: `touch ${marker}`, retries: 0, retryDelaySeconds: 0 }],
      env: {},
      variables: [],
    });
    const r = await waitResult(sent, 'l1');
    expect(r).toMatchObject({ state: 'success', exitCode: 0, actions: [{ index: 0, state: 'success', exitCode: 0 }] });
    const lines = linesOf(sent, 'l1');
    expect(lines.filter((l) => l.text === HOLLOW_LINE)).toHaveLength(1);
    // The lease's own lines around it stay, in sequence.
    expect(lines.map((l) => l.text)).toEqual([
      'Running script action a',
      HOLLOW_LINE,
      'Action a succeeded (exit code 0)',
    ]);
    expect(lines.map((l) => l.seq)).toEqual([1, 2, 3]);
    expect(existsSync(marker)).toBe(false);
    expect(existsSync(join(dir, 'tmp')) ? readdirSync(join(dir, 'tmp')) : []).toEqual([]);
    await lm.stop();
  });

  // A package action downloads the archive and verifies it into the cache, and unpacks nothing: no installation
  // folder, no deploy.sh run, no script run; a prefetch downloads only too.
  it('downloads and verifies a package but does not unpack it', async () => {
    const src = join(dir, 'src');
    mkdirSync(src);
    writeFileSync(join(src, 'deploy.sh'), `touch ${join(dir, 'deployed')}\n`);
    const archive = join(dir, 'app.tar.gz');
    await tar.c({ gzip: true, file: archive, cwd: src, portable: true }, ['deploy.sh']);
    const bytes = readFileSync(archive);
    const pkg = {
      packageId: 'app',
      version: '1.0.0',
      sha256: createHash('sha256').update(bytes).digest('hex'),
      sizeBytes: bytes.length,
    };
    const { lm, sent, downloads } = hollow(archive);
    lm.prefetch({ type: 'package.prefetch', deploymentId: 'd1', packages: [pkg] });
    await delay(50);
    lm.offer({
      type: 'lease.offer',
      leaseId: 'l2',
      deploymentId: 'd1',
      targetRunId: 't1',
      stepName: 'S',
      machineName: 'web-01',
      actions: [
        {
          index: 0,
          name: 'p',
          type: 'package',
          package: pkg,
          script: `touch ${join(dir, 'scripted')}`,
          retries: 0,
          retryDelaySeconds: 0,
        },
      ],
      env: {},
      variables: [],
    });
    const r = await waitResult(sent, 'l2');
    expect(r).toMatchObject({ state: 'success', exitCode: 0 });
    expect(downloads).toEqual([true]); // the prefetch's, verified into the cache; the action found it there
    expect(readdirSync(join(dir, 'work'))).toEqual([]);
    expect(existsSync(join(dir, 'deployed'))).toBe(false);
    expect(existsSync(join(dir, 'scripted'))).toBe(false);
    expect(linesOf(sent, 'l2').map((l) => l.text)).toContain('Package app 1.0.0 verified; not unpacked (hollow agent)');
    await lm.stop();
  });

  // `run` cannot choose it: the agent's command line never names the hollow runner.
  it('is not reachable from the run command', () => {
    const main = readFileSync(join(process.cwd(), 'agent', 'src', 'main.ts'), 'utf8');
    expect(main).not.toMatch(/hollow/i);
  });
});
