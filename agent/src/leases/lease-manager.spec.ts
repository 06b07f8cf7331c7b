import { setTimeout as delay } from 'node:timers/promises';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as tar from 'tar';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import winston from 'winston';
import type { AgentMessage, LeaseOffer } from '#shared/protocol/index.js';
import { Journal } from '../journal/journal.js';
import { PackageStore } from '../packages/package-store.js';
import { LeaseManager } from './lease-manager.js';

const silent = winston.createLogger({ silent: true });

function setup(dir = mkdtempSync(join(tmpdir(), 'cuttle-lm-')), onSend?: (m: AgentMessage) => void, archive?: string) {
  const sent: AgentMessage[] = [];
  const lm = new LeaseManager({
    journal: new Journal(join(dir, 'journal')),
    packages: new PackageStore(join(dir, 'packages')),
    workDir: dir,
    scriptDir: join(dir, 'tmp'),
    machineId: 'm1',
    send: (m) => (onSend?.(m), sent.push(m), true),
    download: async (_sha, dest) => {
      if (!archive) throw new Error('no downloads here');
      copyFileSync(archive, dest);
    },
    logger: silent,
  });
  return { dir, lm, sent };
}

const offer = (leaseId: string, script: string): LeaseOffer => ({
  type: 'lease.offer',
  leaseId,
  deploymentId: 'd1',
  targetRunId: 't1',
  stepName: 'S',
  machineName: 'web-01',
  actions: [{ index: 0, name: 'a', type: 'script', script, retries: 0, retryDelaySeconds: 0 }],
  env: {},
  variables: [],
});

const waitFor = async (f: () => boolean, ms = 10_000) => {
  const t0 = Date.now();
  while (!f()) {
    if (Date.now() - t0 > ms) throw new Error('timed out');
    await delay(20);
  }
};

describe('lease manager', () => {
  // On a loaded machine a script must not wait behind its lease's messages: it is written and spawned while the
  // offer is taken, and the acceptance and the first action's "running" follow, in that order.
  it('starts the script before sending the acceptance, then sends in protocol order', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cuttle-lm-'));
    const scriptsAtAccept: string[] = [];
    const { lm, sent } = setup(dir, (m) => {
      if (m.type === 'lease.accepted') scriptsAtAccept.push(...readdirSync(join(dir, 'tmp')));
    });
    lm.offer(offer('l0', 'true'));
    // The script file, and the variables file get_cuttle_variable reads.
    expect(scriptsAtAccept.sort()).toEqual([
      expect.stringMatching(/^script-[0-9a-f]+\.sh$/),
      expect.stringMatching(/^script-vars-[0-9a-f]+$/),
    ]);
    expect(sent.slice(0, 2).map((m) => (m.type === 'lease.action' ? `${m.type} ${m.state}` : m.type))).toEqual([
      'lease.accepted',
      'lease.action running',
    ]);
    await waitFor(() => sent.some((m) => m.type === 'lease.result'));
    rmSync(dir, { recursive: true, force: true });
  });

  // A lease runs at most once: a repeated dispatch is answered with its state (accepted while running, the result
  // once finished), never run again.
  it('runs a repeated offer once and answers with its state', async () => {
    const { dir, lm, sent } = setup();
    const o = offer('l1', 'echo ran >> runs.txt; sleep 0.3');
    lm.offer(o);
    lm.offer(o);
    expect(sent.filter((m) => m.type === 'lease.accepted')).toHaveLength(2);
    await waitFor(() => sent.some((m) => m.type === 'lease.result'));
    lm.offer(o);
    expect(sent.filter((m) => m.type === 'lease.result')).toHaveLength(2);
    expect(readFileSync(join(dir, 'runs.txt'), 'utf8')).toBe('ran\n');
    // Once acknowledged, the journal forgets it.
    lm.resultAck('l1');
    expect(new Journal(join(dir, 'journal')).all()).toEqual([]);
    rmSync(dir, { recursive: true, force: true });
  });

  // The lease's last lines ride in its result: every line is sent exactly once, in sequence, across the log
  // messages and the result, and the result's lines are journaled (a restart before the ack still has them).
  it('sends the last log lines with the result, none lost or twice', async () => {
    const { dir, lm, sent } = setup();
    lm.offer(offer('l3', 'echo one; sleep 0.2; echo two'));
    await waitFor(() => sent.some((m) => m.type === 'lease.result'));
    const result = sent.find((m) => m.type === 'lease.result');
    const inResult = result?.type === 'lease.result' ? (result.lines ?? []) : [];
    expect(inResult.map((l) => l.text)).toContain('Action a succeeded (exit code 0)');
    const all = [...sent.flatMap((m) => (m.type === 'lease.log' ? m.lines : [])), ...inResult];
    expect(all.map((l) => l.seq)).toEqual(all.map((_, i) => i + 1));
    expect(all.map((l) => l.text)).toEqual(expect.arrayContaining(['one', 'two']));
    expect(new Journal(join(dir, 'journal')).readLog('l3').map((l) => l.seq)).toEqual(all.map((l) => l.seq));
    rmSync(dir, { recursive: true, force: true });
  });

  // An agent that restarts while a lease ran reports it failed with an unknown result, with its journaled log
  // lines first, and never reruns it.
  it('reports a lease interrupted by a restart as an unknown result', async () => {
    const { dir, lm, sent } = setup();
    lm.offer(offer('l2', 'echo before; sleep 30'));
    await waitFor(() => sent.some((m) => m.type === 'lease.log' && m.lines.some((l) => l.text === 'before')));
    // A new manager on the same journal: what a restarted agent process finds.
    const again = setup(dir);
    again.lm.restore();
    expect(again.lm.helloLeases()).toEqual([{ leaseId: 'l2', state: 'finished' }]);
    again.lm.onConnected();
    const lines = again.sent
      .filter((m) => m.type === 'lease.log')
      .flatMap((m) => (m.type === 'lease.log' ? m.lines : []));
    expect(lines.map((l) => l.text)).toEqual(
      expect.arrayContaining(['before', 'The agent restarted while this target was running: its result is unknown']),
    );
    expect(lines.map((l) => l.seq)).toEqual(lines.map((_, i) => i + 1));
    const result = again.sent.find((m) => m.type === 'lease.result');
    expect(result).toMatchObject({
      state: 'failed',
      error: 'unknown result: the agent restarted while this target was running',
      lastLogSeq: lines.length,
    });
    again.lm.offer(offer('l2', 'echo must-not-run > rerun.txt'));
    expect(() => readFileSync(join(dir, 'rerun.txt'))).toThrow();
    await lm.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  // A package action: its config file gets the variables, and after each success only keepReleases installation
  // folders of the package stay, the one just installed among them.
  it('substitutes in package files and keeps keepReleases installs', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cuttle-lm-'));
    const src = join(dir, 'src');
    mkdirSync(src);
    writeFileSync(join(src, 'app.conf'), 'host=#{DbHost} on #{Cuttle.Machine.Name}\n');
    const archive = join(dir, 'app.tar.gz');
    await tar.c({ gzip: true, file: archive, cwd: src, portable: true }, ['app.conf']);
    const bytes = readFileSync(archive);
    const pkg = {
      packageId: 'app',
      version: '1.0.0',
      sha256: createHash('sha256').update(bytes).digest('hex'),
      sizeBytes: bytes.length,
    };
    const { lm, sent } = setup(join(dir, 'agent'), undefined, archive);
    const packageOffer = (leaseId: string, substituteInFiles: string[]): LeaseOffer => ({
      ...offer(leaseId, ''),
      actions: [
        { index: 0, name: 'a', type: 'package', package: pkg, substituteInFiles, retries: 0, retryDelaySeconds: 0 },
      ],
      variables: [
        { name: 'DbHost', value: 'db.internal', sensitive: false },
        { name: 'Cuttle.Machine.Name', value: 'web-01', sensitive: false },
      ],
      keepReleases: 1,
    });
    const result = (id: string) =>
      sent.find(
        (m): m is Extract<AgentMessage, { type: 'lease.result' }> => m.type === 'lease.result' && m.leaseId === id,
      );
    const texts = () =>
      sent.flatMap((m) =>
        (m.type === 'lease.log' ? m.lines : m.type === 'lease.result' ? (m.lines ?? []) : []).map((l) => l.text),
      );
    try {
      lm.offer(packageOffer('l1', ['*.conf']));
      await waitFor(() => !!result('l1'));
      expect(result('l1')!.state).toBe('success');
      lm.offer(packageOffer('l2', ['*.conf']));
      await waitFor(() => !!result('l2'));
      expect(result('l2')!.state).toBe('success');
      const work = join(dir, 'agent');
      expect(readdirSync(join(work, 'app'))).toEqual(['1.0.0_1']);
      expect(readFileSync(join(work, 'app', '1.0.0_1', 'app.conf'), 'utf8')).toBe('host=db.internal on web-01\n');
      expect(texts()).toContain('Substituted variables in app.conf');
      expect(texts()).toContain(
        `Retention (keep 1): removed 1 older installation folder(s) of app: ${join(work, 'app', '1.0.0')}`,
      );
      // A glob the server should have refused is refused here too: the action fails naming it.
      lm.offer(packageOffer('l3', ['../*']));
      await waitFor(() => !!result('l3'));
      expect(result('l3')!.state).toBe('failed');
      expect(result('l3')!.error).toBe('substituteInFiles "../*" must stay inside the package (no ".." segment)');
    } finally {
      await lm.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  // A folder a running lease installed is never pruned, however old: a second deployment of the package that
  // succeeds meanwhile with keepReleases 1 leaves it in place.
  it('never prunes the folder of a running lease', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cuttle-lm-'));
    const src = join(dir, 'src');
    mkdirSync(src);
    writeFileSync(join(src, 'run.txt'), 'app\n');
    const archive = join(dir, 'app.tar.gz');
    await tar.c({ gzip: true, file: archive, cwd: src, portable: true }, ['run.txt']);
    const bytes = readFileSync(archive);
    const pkg = {
      packageId: 'app',
      version: '2.0.0',
      sha256: createHash('sha256').update(bytes).digest('hex'),
      sizeBytes: bytes.length,
    };
    const work = join(dir, 'agent');
    const { lm, sent } = setup(work, undefined, archive);
    const packageOffer = (leaseId: string, script?: string): LeaseOffer => ({
      ...offer(leaseId, ''),
      actions: [{ index: 0, name: 'a', type: 'package', package: pkg, script, retries: 0, retryDelaySeconds: 0 }],
      keepReleases: 1,
    });
    const done = (id: string) => sent.some((m) => m.type === 'lease.result' && m.leaseId === id);
    try {
      // The first lease installs 2.0.0 and keeps running (its script waits for a file).
      lm.offer(packageOffer('slow', 'while [ ! -f ../go ]; do sleep 0.05; done'));
      await waitFor(() => {
        try {
          return readdirSync(join(work, 'app')).includes('2.0.0');
        } catch {
          return false;
        }
      });
      lm.offer(packageOffer('fast'));
      await waitFor(() => done('fast'));
      expect(readdirSync(join(work, 'app')).sort()).toEqual(['2.0.0', '2.0.0_1']);
      writeFileSync(join(work, 'app', 'go'), '');
      await waitFor(() => done('slow'));
      // When the slow one succeeds, its own folder is still in use by it; the newest (the fast one's) is kept.
      expect(
        readdirSync(join(work, 'app'))
          .filter((f) => f !== 'go')
          .sort(),
      ).toEqual(['2.0.0', '2.0.0_1']);
    } finally {
      await lm.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
