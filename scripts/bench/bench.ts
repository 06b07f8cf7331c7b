/**
 * `npm run bench`: what Cuttle costs as the work grows, against the ideal and against Ansible. Not part of `npm test`.
 * Every scenario runs real processes on this machine (server, database, agents in fleet processes, bash, tarballs) and
 * prints one table; the figures are also written to bench/results/<timestamp>.json. See docs/benchmarks.md.
 *
 *   npm run bench                                  all scenarios at their default sizes
 *   npm run bench -- --scenarios makespan,peer     some of them
 *   npm run bench -- --makespan 20x5,100x25 --size-mb 1 --sleep 0.5 --fleet 1000 --quick
 *
 * This file reads the flags, runs the scenarios asked for (scenarios/, one file each) and writes the results; what
 * they run on is harness.ts, the table report.ts.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command } from 'commander';
import { type BenchOptions, ROOT, stopAll } from './harness.js';
import { header, machineFacts, rows, say } from './report.js';
import { runFleet } from './scenarios/fleet.js';
import { runLatency } from './scenarios/latency.js';
import { runLogs } from './scenarios/logs.js';
import { runMakespanAndPeer } from './scenarios/makespan.js';
import { runPackages } from './scenarios/packages.js';
import { runScale } from './scenarios/scale.js';

const program = new Command('bench')
  .option(
    '--scenarios <list>',
    'makespan,peer,fleet,latency,logs,packages,scale',
    'makespan,peer,fleet,latency,logs,packages',
  )
  .option('--scale <n>', 'hollow agents for the scale scenario', (v) => Number(v), 10_000)
  .option('--scale-per-process <n>', 'hollow agents per fleet process (scale)', (v) => Number(v), 500)
  .option('--scale-concurrency <n>', 'registrations at once per fleet process (scale)', (v) => Number(v), 8)
  .option('--makespan <list>', 'NxW pairs for makespan and peer', '20x5,100x25')
  .option('--size-mb <n>', 'package size for makespan and peer', (v) => Number(v), 1)
  .option('--sleep <s>', 'seconds each target sleeps', (v) => Number(v), 0.5)
  .option('--fleet <n>', 'agents for the fleet scenario', (v) => Number(v), 1000)
  .option('--idle-seconds <n>', 'how long the fleet idles while measured', (v) => Number(v), 30)
  .option('--latency-targets <n>', 'targets in flight for the latency scenario', (v) => Number(v), 100)
  .option('--log-agents <n>', 'agents printing for the logs scenario', (v) => Number(v), 10)
  .option('--log-lines <n>', 'lines each of them prints', (v) => Number(v), 50_000)
  .option('--package-mb <n>', 'package size for the packages scenario', (v) => Number(v), 50)
  .option('--package-agents <n>', 'agents for the packages scenario', (v) => Number(v), 20)
  .option('--reps <n>', 'alternating repetitions of Cuttle and Ansible', (v) => Number(v), 1)
  .option('--cold', "makespan, latency: time the agents' first deployment (no untimed warm-up deployment before it)")
  .option('--quick', 'small sizes, for a smoke run of the bench itself');
program.parse();
const o = program.opts<BenchOptions>();
if (o.quick)
  Object.assign(o, {
    makespan: '6x2',
    fleet: 50,
    scale: 200,
    idleSeconds: 5,
    latencyTargets: 10,
    logAgents: 2,
    logLines: 5_000,
    packageMb: 5,
    packageAgents: 3,
  });
const scenarios = new Set(String(o.scenarios).split(','));

process.on('exit', stopAll);
process.on('SIGINT', () => process.exit(130));

const results: Record<string, unknown> = {
  startedAt: new Date().toISOString(),
  machine: machineFacts(),
  database: process.env.DATABASE_URL ? 'postgresql' : 'embedded (PGlite)',
  options: o,
};

say(`Cuttle bench on ${results.database}; ${JSON.stringify(results.machine)}`);
header();
try {
  if (scenarios.has('makespan') || scenarios.has('peer')) results.makespan = await runMakespanAndPeer(o, scenarios);
  if (scenarios.has('latency')) results.latency = await runLatency(o);
  if (scenarios.has('logs')) results.logs = await runLogs(o);
  if (scenarios.has('packages')) results.packages = await runPackages(o);
  if (scenarios.has('fleet')) results.fleet = await runFleet(o);
  if (scenarios.has('scale')) results.scale = await runScale(o);
} finally {
  stopAll();
  results.rows = rows;
  results.finishedAt = new Date().toISOString();
  mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
  const f = join(ROOT, 'bench', 'results', `${results.startedAt as string}.json`.replace(/:/g, '-'));
  writeFileSync(f, JSON.stringify(results, null, 2));
  say(`\nresults written to ${f}`);
}
