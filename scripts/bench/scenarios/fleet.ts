/** fleet: --fleet agents (250 per process) online, the server's memory and CPU while they idle, one no-op step. */
import { setTimeout } from 'node:timers/promises';
import { type BenchOptions, deployAndWait, fleet, procStat, serverPid, withServer } from '../harness.js';
import { row } from '../report.js';

/** The scenario; its results.fleet. */
export async function runFleet(o: BenchOptions) {
  return withServer(async (s) => {
    const { env, onlineAfterMs } = await fleet(s, o.fleet, 'f', 250);
    row(`fleet ${o.fleet} agents`, 'all online after', `${(onlineAfterMs / 1000).toFixed(1)} s`);
    await setTimeout(5_000);
    const pid = serverPid(s);
    const a = procStat(pid);
    const t0 = performance.now();
    await setTimeout(o.idleSeconds * 1000);
    const b = procStat(pid);
    const cpu = (b.cpuTicks - a.cpuTicks) / 100 / ((performance.now() - t0) / 1000);
    row(`fleet ${o.fleet} agents`, 'server RSS at idle', `${(b.rssBytes / 1024 / 1024).toFixed(0)} MiB`, '< 1024 MiB');
    row(`fleet ${o.fleet} agents`, 'server CPU at idle (heartbeats)', `${(cpu * 100).toFixed(1)} % of a core`, '< 5 %');
    const { d, wallMs } = await deployAndWait(
      s,
      'Fleet',
      [{ name: 'Noop', targetRoles: ['f'], windowSize: 100, actions: [{ name: 'n', type: 'script', script: 'true' }] }],
      env.id,
    );
    row(`fleet ${o.fleet} agents`, 'one no-op step, window 100', `${(wallMs / 1000).toFixed(1)} s (${d.state})`);
    return {
      agents: o.fleet,
      onlineAfterMs,
      rssBytes: b.rssBytes,
      idleCpuShare: cpu,
      noopStepMs: wallMs,
      state: d.state,
    };
  });
}
