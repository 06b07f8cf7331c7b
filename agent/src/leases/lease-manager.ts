/**
 * Runs what leases ask, and keeps every promise the protocol makes on the agent's side (shared/src/protocol):
 * a lease runs at most once (a repeated offer is answered with its current state), log lines carry per-lease
 * sequence numbers and are kept until acknowledged, and a result is journaled before it is sent and kept until
 * acknowledged.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  clampLogText,
  LIMITS,
  splitLines,
  type AgentMessage,
  type LeaseAction,
  type LeaseOffer,
  type LogLevel,
  type LogLine,
  type ServerMessageOf,
} from '#shared/protocol/index.js';
import {
  maskSecrets,
  outputName,
  parseServiceMessage,
  SCRIPT_PRELUDE,
  substitute,
  variablesFile,
} from '#shared/variables/index.js';
import type { AgentLogger } from '../logger.js';
import { Journal, type JournalRecord, type LeaseResult } from '../journal/journal.js';
import { PackageInstaller } from '../packages/package-installer.js';
import type { PackageStore } from '../packages/package-store.js';
import { pruneInstallations } from '../packages/retention.js';
import { substituteInFiles } from '../packages/substitute-files.js';
import { processRunner, type Runner } from '../runner/runner.js';
import { ShellReserve } from '../runner/warm-shell.js';

const FLUSH_MS = 50;
const MAX_LINES_PER_MESSAGE = 1_000;
/** Unacknowledged lines per lease above which a script's output is no longer read (back-pressure), and below which reading resumes. */
const HIGH_WATER = 20_000;
const LOW_WATER = 5_000;
/** Installation folders of a package kept after a success when the server says nothing (an older server). */
export const DEFAULT_KEEP_RELEASES = 3;

type ActionOutcome = {
  state: 'success' | 'failed' | 'cancelled';
  exitCode: number | null;
  error?: string;
  failureKind?: 'script' | 'timeout';
};

interface ActiveLease {
  record: JournalRecord;
  offer?: LeaseOffer;
  /** Variables by name, in memory only (never journaled: sensitive values must not reach the disk). */
  vars: Map<string, string>;
  secrets: Set<string>;
  unsent: LogLine[];
  unacked: LogLine[];
  flushTimer?: NodeJS.Timeout;
  abort: AbortController;
  done?: Promise<void>;
  /** Resolvers waiting for the unacknowledged backlog to drain (back-pressure on the script's output). */
  drained: Array<() => void>;
  /** Installation folders this lease made: retention never deletes them while it runs. */
  installs?: string[];
}

export interface LeaseManagerDeps {
  journal: Journal;
  packages: PackageStore;
  workDir: string;
  scriptDir: string;
  machineId: string;
  send: (m: AgentMessage) => boolean;
  /** `prefetch`: ahead of a lease (the server serves lease downloads first). */
  download: (sha256: string, dest: string, prefetch?: boolean) => Promise<void | string>;
  logger: AgentLogger;
  /** Grace between SIGTERM and SIGKILL of a script's process group on cancel or timeout. */
  killGraceMs?: number;
  /** Keep a shell started ahead for the next script (see warm-shell.ts): scripts start without a fork and exec. */
  warmShells?: boolean;
  /** What runs the actions (default: processes; the fleet may choose the hollow runner, see runner/hollow.ts). */
  runner?: Runner;
}

export class LeaseManager {
  private leases = new Map<string, ActiveLease>();
  /**
   * Installs under way by package id: a folder being claimed has no install-time record yet and belongs to no lease
   * yet, so retention waits for a moment when none is (the next success of the package prunes instead).
   */
  private installing = new Map<string, number>();
  /** Set by stop(): scripts killed because the agent is stopping failed; they were not cancelled by an operator. */
  private stopping = false;
  private readonly installer: PackageInstaller;
  /**
   * Messages held while an offer is taken: its script is spawned first, then they go out in order. On a loaded
   * machine, encoding and writing them ahead of the spawn delays the script by their cost and by the server work
   * they set off.
   */
  private corked?: AgentMessage[];
  private readonly shells?: ShellReserve;
  private readonly runner: Runner;

  constructor(private readonly d: LeaseManagerDeps) {
    this.runner = d.runner ?? processRunner;
    this.installer = new PackageInstaller(d.packages, d.workDir, d.download, d.logger, this.runner.unpacksPackages);
    // A warm shell is a process: only for a runner that starts processes.
    if (d.warmShells && this.runner.kind === 'process') this.shells = new ShellReserve(d.workDir);
  }

  /** What the server's welcome says of packages: their bound on unpacked size. */
  setPackageLimits(l: { maxUnpackedBytes?: number }) {
    if (l.maxUnpackedBytes) this.installer.maxUnpackedBytes = l.maxUnpackedBytes;
  }

  /** This target is next in line: get its packages ready before its lease comes (see `package.prefetch`). */
  prefetch(m: ServerMessageOf<'package.prefetch'>) {
    if (this.stopping) return;
    this.d.logger.debug('prefetching packages', {
      deploymentId: m.deploymentId,
      packages: m.packages.map((p) => `${p.packageId}@${p.version}`),
    });
    this.installer.prefetch(m.packages);
  }

  /**
   * After a restart: a lease journaled as running was interrupted with the agent, so its outcome is unknown. It is
   * reported as failed ("unknown result"), never as success; finished ones are resent until acknowledged.
   */
  restore() {
    void this.installer.sweep();
    for (const rec of this.d.journal.all()) {
      const interrupted = rec.state === 'running';
      if (interrupted) {
        rec.state = 'finished';
        rec.result = {
          type: 'lease.result',
          leaseId: rec.leaseId,
          state: 'failed',
          exitCode: null,
          error: 'unknown result: the agent restarted while this target was running',
          failureKind: 'unknown-result',
          actions: rec.actionIndexes.map((index) => ({ index, state: 'failed' as const, exitCode: null })),
          lastLogSeq: rec.lastLogSeq,
          at: new Date().toISOString(),
        };
        this.d.journal.write(rec);
        this.d.logger.warn('lease interrupted by an agent restart; reporting unknown result', { leaseId: rec.leaseId });
      }
      // Lines journaled before the restart are resent (the server drops those it has); sequence numbers go on.
      const unacked = this.d.journal.readLog(rec.leaseId);
      rec.lastLogSeq = Math.max(rec.lastLogSeq, ...unacked.map((l) => l.seq));
      if (rec.result) rec.result.lastLogSeq = Math.max(rec.result.lastLogSeq, rec.lastLogSeq);
      const lease: ActiveLease = {
        record: rec,
        vars: new Map(),
        secrets: new Set(),
        unsent: [],
        unacked,
        abort: new AbortController(),
        drained: [],
      };
      this.leases.set(rec.leaseId, lease);
      if (interrupted) {
        // Journaled, not sent: restore runs before any connection; onConnected sends what is unacknowledged.
        const line = {
          seq: ++rec.lastLogSeq,
          at: new Date().toISOString(),
          level: 'error' as const,
          text: 'The agent restarted while this target was running: its result is unknown',
        };
        this.d.journal.appendLog(rec.leaseId, [line]);
        unacked.push(line);
        rec.result!.lastLogSeq = rec.lastLogSeq;
        this.d.journal.write(rec);
      }
    }
  }

  helloLeases() {
    return [...this.leases.values()].map((l) => ({ leaseId: l.record.leaseId, state: l.record.state }));
  }

  runningLeaseIds() {
    return [...this.leases.values()].filter((l) => l.record.state === 'running').map((l) => l.record.leaseId);
  }

  /** After (re)connecting: resend what the server may not have: unacknowledged log lines first, then results. */
  onConnected() {
    for (const l of this.leases.values()) {
      for (const lines of splitLines(l.unacked, MAX_LINES_PER_MESSAGE))
        this.d.send({ type: 'lease.log', leaseId: l.record.leaseId, lines });
      this.flush(l);
      if (l.record.state === 'finished' && l.record.result) this.d.send(l.record.result);
    }
  }

  offer(o: LeaseOffer) {
    const known = this.leases.get(o.leaseId);
    if (known) {
      // A repeated dispatch (lost accept, reconnect, another server node): answer with the state, never run twice.
      if (known.record.state === 'running') this.d.send({ type: 'lease.accepted', leaseId: o.leaseId });
      else if (known.record.result) this.d.send(known.record.result);
      return;
    }
    const record: JournalRecord = {
      leaseId: o.leaseId,
      deploymentId: o.deploymentId,
      state: 'running',
      acceptedAt: new Date().toISOString(),
      actionIndexes: o.actions.map((a) => a.index),
      lastLogSeq: 0,
    };
    this.d.journal.write(record);
    const lease: ActiveLease = {
      record,
      offer: o,
      vars: new Map(o.variables.map((v) => [v.name, v.value])),
      secrets: new Set(o.variables.filter((v) => v.sensitive).map((v) => v.value)),
      unsent: [],
      unacked: [],
      abort: new AbortController(),
      drained: [],
    };
    this.leases.set(o.leaseId, lease);
    // The journal record is written: the script may start. run() goes synchronously up to the spawn of a first
    // script action (a package action stops at its first file-system call); what it sends meanwhile waits behind
    // the acceptance, in order.
    const held: AgentMessage[] = (this.corked = []);
    try {
      lease.done = this.run(lease, o).catch((e) => {
        this.d.logger.error('lease run crashed', { leaseId: o.leaseId, error: (e as Error).stack });
      });
    } finally {
      this.corked = undefined;
    }
    this.d.send({ type: 'lease.accepted', leaseId: o.leaseId });
    for (const m of held) this.d.send(m);
    this.d.logger.info('lease accepted', {
      leaseId: o.leaseId,
      step: o.stepName,
      actions: o.actions.map((a) => a.name),
    });
  }

  private send(m: AgentMessage) {
    if (this.corked) {
      this.corked.push(m);
      return true;
    }
    return this.d.send(m);
  }

  cancel(leaseId: string, reason?: string) {
    const l = this.leases.get(leaseId);
    if (!l || l.record.state !== 'running' || l.abort.signal.aborted) return;
    this.d.logger.warn('cancelling lease', { leaseId, reason });
    this.line(l, 'warn', `Cancelling: ${reason ?? 'asked by the server'}`);
    l.abort.abort();
    for (const r of l.drained.splice(0)) r();
  }

  logAck(leaseId: string, seq: number) {
    const l = this.leases.get(leaseId);
    if (!l) return;
    l.unacked = l.unacked.filter((x) => x.seq > seq);
    if (l.unacked.length + l.unsent.length <= LOW_WATER) for (const r of l.drained.splice(0)) r();
  }

  resultAck(leaseId: string) {
    const l = this.leases.get(leaseId);
    if (!l || l.record.state !== 'finished') return;
    if (l.flushTimer) clearTimeout(l.flushTimer);
    this.leases.delete(leaseId);
    this.d.journal.remove(leaseId);
  }

  /** Stops every running script (process groups, grace, then SIGKILL) and waits for them. */
  async stop() {
    this.stopping = true;
    this.shells?.stop();
    for (const l of this.leases.values()) {
      l.abort.abort();
      for (const r of l.drained.splice(0)) r();
    }
    await Promise.all([...this.leases.values()].map((l) => l.done));
    await this.installer.stop();
  }

  // ------------------------------------------------------------------ running

  private line(l: ActiveLease, level: LogLevel, text: string, actionIndex?: number) {
    l.record.lastLogSeq += 1;
    const masked = l.secrets.size ? maskSecrets(text, l.secrets) : text;
    l.unsent.push({
      seq: l.record.lastLogSeq,
      at: new Date().toISOString(),
      level,
      text: clampLogText(masked),
      ...(actionIndex !== undefined ? { actionIndex } : {}),
    });
    if (l.unsent.length >= MAX_LINES_PER_MESSAGE) this.flush(l);
    else l.flushTimer ??= setTimeout(() => this.flush(l), FLUSH_MS);
  }

  /**
   * Journals pending lines, then sends them. Once journaled they count as unacknowledged: sent now if connected,
   * resent after a reconnect or a restart otherwise, and forgotten only when the server acknowledges them.
   */
  private flush(l: ActiveLease) {
    // In pieces of at most MAX_LINES_PER_MESSAGE lines and of the protocol's characters per message: 1,000 long
    // lines in one message would pass the server's size limit, which drops the connection, again at every resend.
    for (const lines of splitLines(this.journalPending(l), MAX_LINES_PER_MESSAGE)) {
      if (!this.send({ type: 'lease.log', leaseId: l.record.leaseId, lines })) return;
    }
  }

  /** Takes the lease's pending lines and journals them as unacknowledged; the caller sends them. */
  private journalPending(l: ActiveLease): LogLine[] {
    if (l.flushTimer) clearTimeout(l.flushTimer);
    l.flushTimer = undefined;
    const lines = l.unsent;
    if (!lines.length) return lines;
    l.unsent = [];
    this.d.journal.appendLog(l.record.leaseId, lines);
    l.unacked.push(...lines);
    return lines;
  }

  /** Back-pressure for a lease's scripts: closed while too many lines wait for the server's acknowledgement. */
  private gate(l: ActiveLease) {
    return {
      isOpen: () => l.unacked.length + l.unsent.length < HIGH_WATER,
      wait: () => new Promise<void>((resolve) => l.drained.push(resolve)),
    };
  }

  private async run(l: ActiveLease, o: LeaseOffer) {
    const results: LeaseResult['actions'] = [];
    let outcome: ActionOutcome = { state: 'success', exitCode: 0 };
    for (const action of o.actions) {
      if (l.abort.signal.aborted) {
        outcome = { state: 'cancelled', exitCode: null, error: 'cancelled' };
        break;
      }
      this.send({
        type: 'lease.action',
        leaseId: o.leaseId,
        actionIndex: action.index,
        state: 'running',
        at: new Date().toISOString(),
      });
      this.line(l, 'info', `Running ${action.type} action ${action.name}`, action.index);
      let r: ActionOutcome;
      for (let attempt = 1; ; attempt++) {
        r = await this.runAction(l, o, action).catch((e): ActionOutcome => ({
          state: 'failed',
          exitCode: null,
          error: (e as Error).message,
        }));
        if (r.state === 'cancelled' && this.stopping)
          r = { state: 'failed', exitCode: r.exitCode, error: 'the agent was stopped while this action ran' };
        if (r.state !== 'failed' || attempt > action.retries || l.abort.signal.aborted) break;
        if (r.error) this.line(l, 'error', r.error, action.index);
        this.line(
          l,
          'warn',
          `Action ${action.name} failed (attempt ${attempt} of ${action.retries + 1}); retrying in ${action.retryDelaySeconds} s`,
          action.index,
        );
        await abortableSleep(action.retryDelaySeconds * 1000, l.abort.signal);
      }
      if (r.error) this.line(l, r.state === 'cancelled' ? 'warn' : 'error', r.error, action.index);
      this.line(
        l,
        r.state === 'success' ? 'info' : 'error',
        `Action ${action.name} ${r.state === 'success' ? 'succeeded' : r.state}${r.exitCode !== null ? ` (exit code ${r.exitCode})` : ''}`,
        action.index,
      );
      results.push({ index: action.index, state: r.state, exitCode: r.exitCode });
      // The last action's outcome travels in the result, which follows at once: one message (and one write on the
      // server) less per target.
      const last = action === o.actions[o.actions.length - 1] || r.state !== 'success';
      if (!last)
        this.send({
          type: 'lease.action',
          leaseId: o.leaseId,
          actionIndex: action.index,
          state: r.state,
          exitCode: r.exitCode,
          at: new Date().toISOString(),
        });
      outcome = r;
      if (r.state !== 'success') break;
    }
    // The last lines (up to one message's worth) travel in the result: one message and one write less per target.
    // They are journaled and kept as unacknowledged lines like any others, so a resend after a restart or a
    // reconnect still carries them (the server drops what it has).
    if (splitLines(l.unsent, MAX_LINES_PER_MESSAGE).length > 1) this.flush(l);
    const tail = this.journalPending(l);
    const result: LeaseResult = {
      type: 'lease.result',
      leaseId: o.leaseId,
      state: outcome.state,
      exitCode: outcome.exitCode,
      ...(outcome.state !== 'success' && outcome.error ? { error: outcome.error } : {}),
      ...(outcome.state === 'failed' ? { failureKind: outcome.failureKind ?? 'script' } : {}),
      actions: results,
      lastLogSeq: l.record.lastLogSeq,
      ...(tail.length ? { lines: tail } : {}),
      at: new Date().toISOString(),
    };
    l.record.state = 'finished';
    l.record.result = result;
    this.d.journal.write(l.record); // before sending: a crash after this point resends, never reruns
    this.send(result);
    this.d.logger.info('lease finished', { leaseId: o.leaseId, state: result.state, exitCode: result.exitCode });
  }

  /** A script set an output variable: usable by later actions of this lease at once, and by later steps. */
  private output(
    l: ActiveLease,
    o: LeaseOffer,
    action: LeaseAction,
    v: { name: string; value: string; sensitive: boolean },
  ) {
    if (v.value.length > LIMITS.outputValueChars) {
      // Cut, it would be a different value: later actions would run with it unknowingly. Not set, and said so.
      this.line(
        l,
        'error',
        `Output variable ${outputName(o.stepName, action.name, v.name)} not set: its value has ${v.value.length} characters (at most ${LIMITS.outputValueChars})`,
        action.index,
      );
      return;
    }
    if (v.sensitive && v.value) l.secrets.add(v.value);
    l.vars.set(outputName(o.stepName, action.name, v.name), v.value);
    if (o.machineName) l.vars.set(outputName(o.stepName, action.name, v.name, o.machineName), v.value);
    this.send({
      type: 'lease.output',
      leaseId: o.leaseId,
      actionIndex: action.index,
      name: v.name,
      value: v.value,
      sensitive: v.sensitive,
    });
    this.line(
      l,
      'info',
      `Output variable ${outputName(o.stepName, action.name, v.name)} set${v.sensitive ? ' (sensitive)' : ''}`,
      action.index,
    );
  }

  private async runAction(l: ActiveLease, o: LeaseOffer, action: LeaseAction): Promise<ActionOutcome> {
    const deadline = action.timeoutSeconds ? Date.now() + action.timeoutSeconds * 1000 : undefined;
    const env: Record<string, string> = {
      ...o.env,
      CUTTLE_ACTION_NAME: action.name,
      CUTTLE_LEASE_ID: o.leaseId,
      CUTTLE_MACHINE_ID: this.d.machineId,
    };
    const vars = new Map(l.vars);
    vars.set('Cuttle.Action.Name', action.name);
    const script = async (text: string, cwd: string): Promise<ActionOutcome> => {
      const remaining = deadline ? Math.max(1, Math.ceil((deadline - Date.now()) / 1000)) : undefined;
      // Substituted now, not on the server: output variables of earlier actions of this lease are known only here.
      const sub = substitute(text, (n) => vars.get(n));
      for (const u of sub.unknown) this.line(l, 'warn', `Unknown variable #{${u}} is left as written`, action.index);
      // Nothing runs that would read the variables file: none is written.
      if (this.runner.kind === 'hollow') return runIt(sub.text, cwd, remaining, '');
      // What get_cuttle_variable reads: a 0600 file in the agent's private script folder (in memory on Linux), named
      // in the environment, gone when the script ends. Written synchronously, as the script is (see runScript).
      mkdirSync(this.d.scriptDir, { recursive: true, mode: 0o700 });
      chmodSync(this.d.scriptDir, 0o700);
      const varsFile = join(this.d.scriptDir, `script-vars-${randomBytes(8).toString('hex')}`);
      writeFileSync(varsFile, variablesFile(vars), { mode: 0o600, flag: 'wx' });
      try {
        return await runIt(sub.text, cwd, remaining, varsFile);
      } finally {
        rmSync(varsFile, { force: true });
      }
    };
    const runIt = async (
      text: string,
      cwd: string,
      remaining: number | undefined,
      varsFile: string,
    ): Promise<ActionOutcome> => {
      const r = await this.runner.runScript({
        script: SCRIPT_PRELUDE + text,
        cwd,
        env: { ...env, CUTTLE_VARIABLES_FILE: varsFile },
        scriptDir: this.d.scriptDir,
        timeoutSeconds: remaining,
        graceMs: this.d.killGraceMs,
        signal: l.abort.signal,
        gate: this.gate(l),
        shell: this.shells?.take(),
        onLine: (stream, t) => {
          const out = stream === 'stdout' ? parseServiceMessage(t) : null;
          if (out) return this.output(l, o, action, out);
          this.line(l, stream === 'stderr' ? 'error' : 'info', t, action.index);
        },
      });
      if (r.cancelled) return { state: 'cancelled', exitCode: r.exitCode, error: 'cancelled: the script was stopped' };
      if (r.timedOut)
        return {
          state: 'failed',
          exitCode: r.exitCode,
          error: `timed out after ${action.timeoutSeconds} s`,
          failureKind: 'timeout',
        };
      if (r.exitCode === 0) return { state: 'success', exitCode: 0 };
      return { state: 'failed', exitCode: r.exitCode, error: r.signal ? `killed by ${r.signal}` : undefined };
    };

    if (action.type === 'script') return script(action.script ?? '', this.d.workDir);

    const pkg = action.package;
    if (!pkg) return { state: 'failed', exitCode: null, error: 'the server sent a package action without a package' };
    const cached = await this.installer.cached(pkg);
    if (cached)
      this.line(
        l,
        'info',
        `Package ${pkg.packageId} ${pkg.version} is in the cache (sha256 ${pkg.sha256.slice(0, 12)}…)`,
        action.index,
      );
    else
      this.line(
        l,
        'info',
        `Downloading package ${pkg.packageId} ${pkg.version} (${pkg.sizeBytes} bytes, sha256 ${pkg.sha256.slice(0, 12)}…)`,
        action.index,
      );
    // Pinned until unpacked: another download's cache eviction must not take the archive meanwhile.
    const unpin = this.installer.pin(pkg);
    this.installing.set(pkg.packageId, (this.installing.get(pkg.packageId) ?? 0) + 1);
    let installed: { dir: string; ahead: boolean };
    try {
      const got = await this.installer.ensure(pkg);
      if (got.downloaded) this.line(l, 'info', `Downloaded and verified ${got.bytes} bytes`, action.index);
      for (const e of got.evicted ?? [])
        this.line(
          l,
          'info',
          `Package cache: evicted ${e.sha256.slice(0, 12)}… (${e.bytes} bytes, least recently used) to stay within its bound`,
          action.index,
        );
      if (!this.runner.unpacksPackages) {
        this.line(
          l,
          'info',
          `Package ${pkg.packageId} ${pkg.version} verified; not unpacked (hollow agent)`,
          action.index,
        );
        return { state: 'success', exitCode: 0 };
      }
      installed = await this.installer.install(got.path, pkg);
      (l.installs ??= []).push(installed.dir);
    } finally {
      unpin();
      const n = (this.installing.get(pkg.packageId) ?? 1) - 1;
      if (n > 0) this.installing.set(pkg.packageId, n);
      else this.installing.delete(pkg.packageId);
    }
    const { dir, ahead } = installed;
    env.CUTTLE_PACKAGE_INSTALLATION_DIRECTORY = dir;
    vars.set('Cuttle.Package.InstallationDirectory', dir);
    this.line(
      l,
      'info',
      `Extracted ${pkg.packageId} ${pkg.version} to ${dir}${ahead ? ' (unpacked ahead of the lease)' : ''}`,
      action.index,
    );
    if (action.substituteInFiles?.length) {
      const rep = await substituteInFiles(dir, action.substituteInFiles, (n) => vars.get(n));
      for (const f of rep.changed) this.line(l, 'info', `Substituted variables in ${f}`, action.index);
      for (const u of rep.unknown)
        for (const n of u.names)
          this.line(l, 'warn', `Unknown variable #{${n}} in ${u.file} is left as written`, action.index);
      for (const s of rep.skipped) this.line(l, 'warn', `Not substituted in ${s.file}: ${s.reason}`, action.index);
      for (const p of rep.unmatched)
        this.line(l, 'warn', `substituteInFiles "${p}" matched no file in the package`, action.index);
    }
    if (existsSync(join(dir, 'deploy.sh'))) {
      this.line(l, 'info', 'Running deploy.sh', action.index);
      const r = await script('exec bash ./deploy.sh', dir);
      if (r.state !== 'success') return { ...r, error: r.error ?? `deploy.sh exited with code ${r.exitCode}` };
    }
    if (action.script?.trim()) {
      const r = await script(action.script, dir);
      if (r.state !== 'success') return r;
    }
    await this.retain(l, o, action, pkg.packageId);
    return { state: 'success', exitCode: 0 };
  }

  /**
   * After a package action's success: the package's installation folders beyond the project's `keepReleases` go,
   * never one a running lease on this agent installed (this one's included). A failure here is only a warning: the
   * deployment succeeded.
   */
  private async retain(l: ActiveLease, o: LeaseOffer, action: LeaseAction, packageId: string) {
    const keep = o.keepReleases ?? DEFAULT_KEEP_RELEASES;
    if (this.installing.has(packageId)) return;
    const protect = new Set<string>();
    for (const x of this.leases.values())
      if (x.record.state === 'running') for (const d of x.installs ?? []) protect.add(d);
    try {
      const removed = await pruneInstallations(this.d.workDir, packageId, keep, protect);
      if (!removed.length) return;
      this.line(
        l,
        'info',
        `Retention (keep ${keep}): removed ${removed.length} older installation folder(s) of ${packageId}: ${removed.join(', ')}`,
        action.index,
      );
      this.d.logger.info('removed older installation folders', { packageId, keep, removed });
    } catch (e) {
      this.line(
        l,
        'warn',
        `Retention: could not remove older installation folders of ${packageId}: ${(e as Error).message}`,
        action.index,
      );
    }
  }
}

function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
