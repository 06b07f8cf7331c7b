/**
 * latency: --latency-targets scripts started in one round, from each lease taken to its script's first line and from
 * its exit to its result stored, beside the floor of this machine (as many bash processes started at once).
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { allLog, type BenchOptions, deployAndWait, fleet, withServer } from '../harness.js';
import { p50p95p99, row } from '../report.js';

/**
 * What a latency target runs. Its start is stamped by bash's own clock ($EPOCHREALTIME, bash 5): `$(date ...)` would
 * add a fork and exec of `date` per target to what is measured, 100 of them at once on this machine's two cores.
 */
const LATENCY_PROBE = 'echo "started $EPOCHREALTIME"; sleep 1';
const probeStartedMs = (text: string) => {
  const m = /^started (\d+\.\d+)$/.exec(text.trim());
  return m ? Number(m[1]) * 1000 : null;
};

/** The scenario; its results.latency. */
export async function runLatency(o: BenchOptions) {
  return withServer(async (s) => {
    const n = o.latencyTargets;
    const { env } = await fleet(s, n, 'l', 10);
    const steps = [
      { name: 'Hold', targetRoles: ['l'], actions: [{ name: 'h', type: 'script', script: LATENCY_PROBE }] },
    ];
    // Untimed first, as in makespan: long-running agents have compiled their code paths before.
    if (!o.cold) await deployAndWait(s, 'Latency', steps, env.id);
    const { d } = await deployAndWait(s, 'Latency', steps, env.id);
    const log = await allLog(s, d.id);
    if (process.env.CUTTLE_BENCH_DUMP)
      writeFileSync(`${process.env.CUTTLE_BENCH_DUMP}-latency.json`, JSON.stringify({ deployment: d, log }));
    // Keyed by machine (lines without one, the server's own, are never looked up).
    const taken = new Map<string | undefined, number>();
    const started = new Map<string | undefined, number>();
    const exited = new Map<string | undefined, number>();
    for (const e of log) {
      if (/lease taken/.test(e.text)) taken.set(e.machineId, Date.parse(e.at));
      const at = probeStartedMs(e.text);
      if (at !== null) started.set(e.machineId, at);
      if (/^Action h succeeded/.test(e.text)) exited.set(e.machineId, Date.parse(e.at));
    }
    const dispatch: number[] = [];
    const report: number[] = [];
    for (const t of d.steps[0].targets) {
      const m = t.machineId!; // a step with target roles
      if (taken.has(m) && started.has(m)) dispatch.push(Math.round(started.get(m)! - taken.get(m)!));
      if (exited.has(m)) report.push(Date.parse(t.finishedAt!) - exited.get(m)!);
    }
    const floor = bashFloor(n);
    const [dispatchMs, reportMs, floorMs, floorEachSpawnMs] = [dispatch, report, floor.together, floor.each].map(
      p50p95p99,
    );
    const shown = (x: { p50: number; p95: number; p99: number }) => `${x.p50}/${x.p95}/${x.p99} ms`;
    row(`latency ${n} in flight`, 'lease → script started p50/p95/p99', shown(dispatchMs), 'p99 < 20 ms');
    row(`latency ${n} in flight`, 'script exit → result stored p50/p95/p99', shown(reportMs));
    row(`latency ${n} in flight`, `floor: ${n} bash asked at once from one process p50/p95/p99`, shown(floorMs));
    row(`latency ${n} in flight`, `  the same, each from its own spawn() p50/p95/p99`, shown(floorEachSpawnMs));
    return { targets: n, dispatchMs, reportMs, floorMs, floorEachSpawnMs };
  });
}

/**
 * The physical floor of the latency scenario on this machine: the same script started N times at once straight from
 * one Node.js process, no server, no agent. `together`: milliseconds from the moment all N were asked for to each
 * script's own clock, what the scenario measures (its leases are all taken in one round). `each`: from each one's
 * own spawn() call, which leaves out the wait behind the spawns before it.
 */
function bashFloor(n: number): { together: number[]; each: number[] } {
  // In a fresh process of its own: what "straight from one Node.js process" means.
  const code = `
    import { spawn } from 'node:child_process';
    const askedAll = Date.now();
    const outs = await Promise.all(Array.from({ length: ${n} }, () => {
      const asked = Date.now();
      return new Promise((resolve) => {
        // stdin from /dev/null, as the agent runs scripts: on a socket (libuv's default for a pipe) bash acts as if
        // started by rshd and reads ~/.bashrc, which on this machine runs pyenv's rehash (seconds per shell).
        const p = spawn('bash', ['-c', ${JSON.stringify(LATENCY_PROBE)}], { stdio: ['ignore', 'pipe', 'inherit'] });
        let out = '';
        p.stdout.on('data', (d) => (out += d));
        p.on('close', () => {
          const at = Number(/started (\\d+\\.\\d+)/.exec(out)?.[1] ?? NaN) * 1000;
          resolve([Math.round(at - askedAll), Math.round(at - asked)]);
        });
      });
    }));
    process.stdout.write(JSON.stringify(outs.filter(([t]) => !Number.isNaN(t))));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8' });
  const ok: Array<[number, number]> = JSON.parse(r.stdout || '[]');
  return { together: ok.map(([t]) => t), each: ok.map(([, e]) => e) };
}
