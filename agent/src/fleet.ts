#!/usr/bin/env node
/**
 * Several agents in one process: `node dist/agent/src/fleet.js --server URL --token TOKEN --count N --prefix web
 * --roles web --environments E --home DIR`. Each agent still has its own key, certificate, TLS connection, journal
 * and work folder (DIR/<name>); only the Node.js process is shared. For tests and benchmarks that need many targets
 * on one machine; in production run one agent per machine (`run`).
 *
 * `--hollow`: every agent gets the hollow runner (runner/hollow.ts): still the real agent, but a script succeeds at
 * once with one log line and starts no process, and a package is downloaded and verified but not unpacked. A
 * measuring instrument for the server's cost per target (`npm run fleet`, the scale benchmark); `run` cannot choose it.
 */
import { join } from 'node:path';
import { Command } from 'commander';
import { Agent } from './agent.js';
import { AgentHome } from './identity.js';
import { createAgentLogger } from './logger.js';
import { registerWithRetry } from './registration/register.js';
import { hollowRunner } from './runner/hollow.js';

const list = (v: string) =>
  v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

const program = new Command('cuttle-agent-fleet')
  .requiredOption('--home <dir>', "parent folder of the agents' homes")
  .requiredOption('--count <n>', 'how many agents', (v) => Number(v))
  .option('--prefix <p>', 'agent names are <prefix>-01, <prefix>-02, ...', 'agent')
  .option('--first <n>', 'number of the first agent', (v) => Number(v), 1)
  .option('--server <url>', 'server REST URL (to register)')
  .option('--token <token>', 'registration token (first start)')
  .option('--roles <list>', 'roles', list, [])
  .option('--environments <list>', 'environments', list, [])
  .option('--concurrency <n>', 'registrations at once', (v) => Number(v), 8)
  .option('--cache-mb <n>', "bound of each agent's package cache in megabytes (default 2048)", (v) => Number(v))
  .option('--hollow', 'agents whose runner starts no process and unpacks nothing (a measuring instrument)', false);
program.parse();
const o = program.opts<{
  home: string;
  count: number;
  prefix: string;
  first: number;
  server?: string;
  token?: string;
  roles: string[];
  environments: string[];
  concurrency: number;
  cacheMb?: number;
  hollow: boolean;
}>();

const log = createAgentLogger(undefined, `${o.prefix}-fleet`);
const width = Math.max(2, String(o.first + o.count - 1).length);
const names = Array.from({ length: o.count }, (_, i) => `${o.prefix}-${String(o.first + i).padStart(width, '0')}`);
const agents: Agent[] = [];

async function startOne(name: string) {
  const home = new AgentHome(join(o.home, name));
  home.prepare();
  // Many agents registering at once can find the server busy: retryable errors are retried, as `run` does.
  const identity = home.hasIdentity()
    ? home.load()
    : await registerWithRetry(
        home,
        { serverUrl: o.server!, token: o.token!, name, roles: o.roles, environments: o.environments },
        undefined,
        20,
      );
  const agent = new Agent(home, identity, log.child({ agent: name }), {
    cacheMb: o.cacheMb,
    runner: o.hollow ? hollowRunner : undefined,
  });
  agent.start((e) => log.error(`${name} stopped: ${e.message}`));
  agents.push(agent);
}

const queue = [...names];
await Promise.all(
  Array.from({ length: Math.min(o.concurrency, queue.length) }, async () => {
    for (let n = queue.shift(); n; n = queue.shift()) await startOne(n);
  }),
);
log.info(`fleet of ${agents.length} ${o.hollow ? 'hollow ' : ''}agents running`);

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await Promise.all(agents.map((a) => a.stop()));
  process.exit(0);
};
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());
