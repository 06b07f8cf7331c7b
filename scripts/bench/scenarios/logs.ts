/** logs: --log-agents agents each printing --log-lines numbered lines; lines stored per second, none lost, read back. */
import { allLog, type BenchOptions, deployAndWait, fleet, marked, withServer } from '../harness.js';
import { row } from '../report.js';

/** The scenario; its results.logs. */
export async function runLogs(o: BenchOptions) {
  return withServer(async (s) => {
    const { env } = await fleet(s, o.logAgents, 'g', 10);
    const { d, wallMs } = await marked('timed logs deployment', () =>
      deployAndWait(
        s,
        'Logs',
        [{ name: 'Loud', targetRoles: ['g'], actions: [{ name: 'l', type: 'script', script: `seq 1 ${o.logLines}` }] }],
        env.id,
      ),
    );
    const t0 = performance.now();
    const log = await allLog(s, d.id);
    const readS = (performance.now() - t0) / 1000;
    const lines = log.filter((e) => /^\d+$/.test(e.text));
    const byMachine = new Map<string | undefined, number[]>();
    for (const e of lines) {
      const list = byMachine.get(e.machineId) ?? [];
      list.push(Number(e.text));
      byMachine.set(e.machineId, list);
    }
    let defects = 0;
    for (const nums of byMachine.values()) nums.forEach((v, i) => (defects += v === i + 1 ? 0 : 1));
    const expected = o.logAgents * o.logLines;
    defects += Math.abs(expected - lines.length);
    const perSecond = lines.length / (wallMs / 1000);
    row(`logs ${o.logAgents}×${o.logLines}`, 'lines stored per second', `${Math.round(perSecond)}`, '≥ 50,000');
    row(`logs ${o.logAgents}×${o.logLines}`, 'lost or duplicated', `${defects}`, '0');
    row(
      `logs ${o.logAgents}×${o.logLines}`,
      'read back through the log API',
      `${Math.round(log.length / readS)} lines/s`,
    );
    return {
      agents: o.logAgents,
      linesEach: o.logLines,
      stored: lines.length,
      defects,
      deploymentMs: wallMs,
      storedPerSecond: perSecond,
      readPerSecond: log.length / readS,
    };
  });
}
