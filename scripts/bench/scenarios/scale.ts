/**
 * scale (#19, first part): --scale hollow agents (agent/src/runner/hollow.ts: real agents whose runner starts no
 * process) in fleet processes of --scale-per-process: time until all are registered and online (and the rate), then
 * the server's RSS and CPU while they idle. Not yet: the step across all of them with window 1,000 and the server's
 * and database's CPU per target (see docs/benchmarks.md, "What is left").
 */
import { setTimeout } from 'node:timers/promises';
import { type BenchOptions, fleet, procStat, serverPid, withServer } from '../harness.js';
import { row } from '../report.js';

/** The scenario; its results.scale. */
export async function runScale(o: BenchOptions) {
  return withServer(async (s) => {
    const what = `scale ${o.scale} hollow agents`;
    const pid = serverPid(s);
    const c0 = procStat(pid);
    const { onlineAfterMs } = await fleet(s, o.scale, 'h', o.scalePerProcess, {
      hollow: true,
      concurrency: o.scaleConcurrency,
    });
    const c1 = procStat(pid);
    const rate = o.scale / (onlineAfterMs / 1000);
    row(what, 'registered and online after', `${(onlineAfterMs / 1000).toFixed(1)} s`);
    row(what, 'registration rate', `${rate.toFixed(1)} agents/s`, '≥ 50 agents/s');
    const regCpuMs = ((c1.cpuTicks - c0.cpuTicks) * 10) / o.scale;
    row(what, 'server CPU per agent (register, connect)', `${regCpuMs.toFixed(1)} ms`);
    await setTimeout(5_000);
    const a = procStat(pid);
    const t0 = performance.now();
    await setTimeout(o.idleSeconds * 1000);
    const b = procStat(pid);
    const cpu = (b.cpuTicks - a.cpuTicks) / 100 / ((performance.now() - t0) / 1000);
    row(what, 'server RSS at idle', `${(b.rssBytes / 1024 / 1024).toFixed(0)} MiB`, '< 1536 MiB');
    row(what, 'server CPU at idle (heartbeats)', `${(cpu * 100).toFixed(1)} % of a core`, '< 10 %');
    return {
      agents: o.scale,
      perProcess: o.scalePerProcess,
      concurrency: o.scaleConcurrency,
      onlineAfterMs,
      agentsPerSecond: rate,
      serverCpuMsPerRegistration: regCpuMs,
      rssBytes: b.rssBytes,
      idleCpuShare: cpu,
    };
  });
}
