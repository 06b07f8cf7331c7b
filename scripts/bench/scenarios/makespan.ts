/**
 * makespan and peer: N targets rolled W at a time, each unpacking a package and sleeping, timed against the ideal
 * (ceil(N/W) sleeps) and, for peer, against the same job done by Ansible (peer.ts), alternating for --reps.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import type { LogEntry, TargetRun } from '#shared/api/types.js';
import {
  allLog,
  type BenchOptions,
  deployAndWait,
  fleet,
  marked,
  payload,
  type Srv,
  started,
  withServer,
} from '../harness.js';
import { pct, row, say } from '../report.js';
import { ansible, ensureAnsible } from './peer.js';

type Phases = Record<string, { p50: number; p95: number }>;

/** One timed roll of N targets W at a time: its seconds, where a target's time went, and CPU per target by part. */
async function makespan(
  n: number,
  w: number,
  o: BenchOptions,
): Promise<{ seconds: number; phases: Phases; cpu: Record<string, number> }> {
  return withServer(async (s) => {
    // One process per agent, as on real targets: agents sharing an event loop would serialise a wave's
    // downloads and unpacking (a window takes consecutive targets) and measure that instead.
    const { env } = await fleet(s, n, `m${n}`, 1);
    const steps = [
      {
        name: 'Roll',
        targetRoles: [`m${n}`],
        windowSize: w,
        actions: [{ name: 'Unpack', type: 'package', packageId: 'app' }],
      },
    ];
    const upload = async () => {
      const file = await payload(
        s.work,
        o.sizeMb,
        `#!/bin/sh\nsleep ${o.sleep}\necho "deployed $(date +%s.%N)" > "$PWD/DEPLOYED"\n`,
      );
      const version = `1.0.${Date.now()}`;
      await s.api.request('POST', `/api/packages/app/${version}`, undefined, {
        data: readFileSync(file),
        contentType: 'application/gzip',
      });
      return version;
    };
    // An untimed first roll warms the agents up as they are on long-running targets (code compiled, TLS contexts
    // made): a freshly started process pays ~50 ms of one-off start-up costs on its first package. The timed roll
    // then ships a new package version (new bytes, so nothing comes from the agents' caches).
    if (!o.cold) await deployAndWait(s, 'Makespan', steps, env.id, { app: await upload() });
    const version = await upload();
    const before = cpuByPart(s);
    const timedFromUs = process.hrtime.bigint() / 1000n;
    const { d, wallMs } = await marked('timed roll', () =>
      deployAndWait(s, 'Makespan', steps, env.id, { app: version }),
    );
    const timedToUs = process.hrtime.bigint() / 1000n;
    const after = cpuByPart(s);
    const cpu = Object.fromEntries(
      Object.keys(after).map((k) => [k, Math.round(((after[k] - (before[k] ?? 0)) * 10) / n)]),
    );
    const log = await allLog(s, d.id);
    // For a closer look at one run: the deployment and its whole log as JSON, and when it ran on the monotonic clock
    // in µs (the clock of --cpu-prof samples: a profile can be cut to the timed roll).
    if (process.env.CUTTLE_BENCH_DUMP)
      writeFileSync(
        `${process.env.CUTTLE_BENCH_DUMP}-${n}x${w}.json`,
        JSON.stringify({ deployment: d, log, timedUs: [Number(timedFromUs), Number(timedToUs)] }),
      );
    return { seconds: wallMs / 1000, phases: phases(log, d.steps[0].targets, o.sleep * 1000), cpu };
  });
}

/**
 * CPU time (in ticks of 10 ms) used so far by each part on this machine: the server process, the agents (with the
 * scripts they ran, counted once reaped), and PostgreSQL's processes.
 */
function cpuByPart(s: Srv): Record<string, number> {
  const out: Record<string, number> = { server: 0, agents: 0, postgres: 0 };
  const agents = new Set(
    started()
      .filter((p) => p !== s.proc)
      .map((p) => p.pid),
  );
  for (const pid of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      continue;
    }
    const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const own = Number(f[11]) + Number(f[12]);
    const children = Number(f[13]) + Number(f[14]);
    if (Number(pid) === s.proc.pid) out.server += own;
    else if (agents.has(Number(pid))) out.agents += own + children;
    else if (comm === 'postgres') out.postgres += own;
  }
  return out;
}

/**
 * Where a target's time goes, from the deployment log's timestamps (server lines: server clock; agent lines: the
 * agent's clock, the same machine here): lease taken → agent starts the action → package in the cache → unpacked →
 * deploy.sh started → action done (minus the script's sleep) → result stored; and how long a freed slot stays empty
 * before the next lease takes it.
 */
function phases(log: LogEntry[], targets: TargetRun[], sleepMs: number): Phases {
  const at = new Map<string, Record<string, number>>();
  const mark = (m: string, k: string, t: string) => {
    const e = at.get(m) ?? {};
    e[k] ??= Date.parse(t);
    at.set(m, e);
  };
  const slotOf = new Map<string, number>();
  for (const e of log) {
    if (!e.machineId) continue;
    const taken = /lease taken \(slot (\d+)/.exec(e.text);
    if (taken) {
      mark(e.machineId, 'taken', e.at);
      slotOf.set(e.machineId, Number(taken[1]));
    } else if (/^Running package action/.test(e.text)) mark(e.machineId, 'running', e.at);
    else if (/^Downloaded and verified|is in the cache/.test(e.text)) mark(e.machineId, 'cached', e.at);
    else if (/^Extracted /.test(e.text)) mark(e.machineId, 'unpacked', e.at);
    else if (/^Running deploy\.sh/.test(e.text)) mark(e.machineId, 'script', e.at);
    else if (/^Action .* succeeded/.test(e.text)) mark(e.machineId, 'done', e.at);
  }
  for (const t of targets) if (t.finishedAt) mark(t.machineId!, 'stored', t.finishedAt); // a step with target roles
  const spans: Record<string, number[]> = {
    'lease → agent runs': [],
    'package download': [],
    unpack: [],
    'unpacked → script': [],
    'script beyond its sleep': [],
    'done → result stored': [],
    'slot empty': [],
  };
  const add = (k: string, a?: number, b?: number, minus = 0) =>
    a !== undefined && b !== undefined && spans[k].push(b - a - minus);
  for (const e of at.values()) {
    add('lease → agent runs', e.taken, e.running);
    add('package download', e.running, e.cached);
    add('unpack', e.cached, e.unpacked);
    add('unpacked → script', e.unpacked, e.script);
    add('script beyond its sleep', e.script, e.done, sleepMs);
    add('done → result stored', e.done, e.stored);
  }
  const bySlot = new Map<number, Array<Record<string, number>>>();
  for (const [m, e] of at) if (slotOf.has(m)) bySlot.set(slotOf.get(m)!, [...(bySlot.get(slotOf.get(m)!) ?? []), e]);
  for (const list of bySlot.values()) {
    list.sort((a, b) => a.taken - b.taken);
    for (let i = 1; i < list.length; i++) add('slot empty', list[i - 1].stored, list[i].taken);
  }
  return Object.fromEntries(Object.entries(spans).map(([k, v]) => [k, { p50: pct(v, 50), p95: pct(v, 95) }]));
}

/** makespan and/or peer (as `scenarios` asks) for each --makespan pair; the entries of results.makespan. */
export async function runMakespanAndPeer(o: BenchOptions, scenarios: Set<string>): Promise<unknown[]> {
  const pairs = String(o.makespan)
    .split(',')
    .map((p) => p.split('x').map(Number) as [number, number]);
  const peer = scenarios.has('peer') && ensureAnsible();
  if (scenarios.has('peer') && !peer) say('  ansible could not be installed: peer skipped');
  const out: unknown[] = [];
  for (const [n, w] of pairs) {
    const ideal = Math.ceil(n / w) * o.sleep;
    const cuttle: number[] = [];
    const ans: number[] = [];
    let best: Phases = {};
    let bestCpu: Record<string, number> = {};
    for (let rep = 0; rep < o.reps; rep++) {
      if (scenarios.has('makespan') || peer) {
        const run = await makespan(n, w, o);
        cuttle.push(run.seconds);
        if (run.seconds === Math.min(...cuttle)) [best, bestCpu] = [run.phases, run.cpu];
      }
      if (peer) ans.push(await ansible(n, w, o));
    }
    const c = Math.min(...cuttle);
    row(`makespan N=${n} W=${w}`, `wall time (ideal ${ideal.toFixed(2)} s)`, `${c.toFixed(2)} s`, '');
    row(`makespan N=${n} W=${w}`, 'ratio to ideal', (c / ideal).toFixed(2), n <= 20 ? '≤ 1.10' : '≤ 1.25');
    row(
      `makespan N=${n} W=${w}`,
      'per target p50/p95 (ms)',
      Object.entries(best)
        .map(([k, v]) => `${k} ${v.p50}/${v.p95}`)
        .join('; '),
    );
    row(
      `makespan N=${n} W=${w}`,
      'CPU per target (ms)',
      Object.entries(bestCpu)
        .map(([k, v]) => `${k} ${v}`)
        .join(', '),
    );
    const entry: Record<string, unknown> = {
      n,
      w,
      sizeMb: o.sizeMb,
      sleep: o.sleep,
      idealS: ideal,
      cuttleS: cuttle,
      ratio: c / ideal,
      phasesMs: best,
      cpuPerTargetMs: bestCpu,
    };
    if (ans.length) {
      const a = Math.min(...ans);
      row(`peer N=${n} W=${w}`, 'Ansible wall time', `${a.toFixed(2)} s`);
      row(`peer N=${n} W=${w}`, 'Ansible / Cuttle', `${(a / c).toFixed(1)}×`, n <= 20 ? '≥ 7×' : '≥ 30×');
      Object.assign(entry, { ansibleS: ans, speedup: a / c });
    }
    out.push(entry);
  }
  return out;
}
