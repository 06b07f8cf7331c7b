#!/usr/bin/env node
/**
 * `npm run agent -- run --server URL --token TOKEN --name NAME --roles r1,r2 --environments E1 --labels zone=a
 * --home DIR`
 * Registers on first start (the token pins the server's CA), then runs with its stored identity. Run again with
 * only `--home DIR` and it reconnects. SIGTERM/SIGINT stop it: running scripts are stopped (their process groups),
 * and what the server has not acknowledged stays in the journal for the next start. Bad usage (an unknown option, a
 * malformed value) exits 2 with the option named; 78 is kept for "cannot work, do not restart".
 */
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { parseLabelList } from '#shared/labels/index.js';
import { Agent } from './agent.js';
import { FatalAgentError } from './errors.js';
import { AgentHome } from './identity.js';
import { createAgentLogger } from './logger.js';
import { DEFAULT_CACHE_MB } from './packages/package-store.js';
import { AGENT_VERSION, registerWithRetry } from './registration/register.js';

const list = (v: string) =>
  v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
const url = (v: string) => {
  try {
    const u = new URL(v);
    if (u.protocol !== 'https:') throw new Error();
    return u.origin;
  } catch {
    throw new InvalidArgumentError('must be an https:// URL like https://deploy.example.com:8443');
  }
};

const megabytes = (v: string) => {
  if (!/^\d{1,9}$/.test(v) || Number(v) < 1)
    throw new InvalidArgumentError('must be a whole number of megabytes (at least 1)');
  return Number(v);
};

const labels = (v: string) => {
  const r = parseLabelList(v, '--labels');
  // Commander says "option '--labels <list>' argument '...' is invalid." before the reason.
  if (!r.ok) throw new InvalidArgumentError(r.message.replace(/^--labels: /, ''));
  return r.value;
};

/** Labels are the server's to keep once the machine exists: a later --labels changes nothing, and says so. */
const LABELS_AT_REGISTRATION =
  '--labels applies at registration only: this agent is registered already, so its labels stay as the server has them (change them with PATCH /api/machines/:id {"labels": {...}})';

const program = new Command('cuttle-agent')
  .description('Cuttle agent (tentacle): runs deployment work on this machine')
  .version(AGENT_VERSION)
  // Usage errors are thrown (and exit 2 below) rather than exiting 1, which a caller could not tell from a crash.
  .exitOverride();

program
  .command('run')
  .description('register (first start, with --token) and run the agent')
  .requiredOption('--home <dir>', 'folder for the identity, journal and package cache')
  .option('--server <url>', 'server REST URL (https://HOST:8443), needed to register', url)
  .option('--token <token>', 'registration token (first start only)')
  .option('--name <name>', 'machine name (first start only; default: host name)')
  .option('--roles <list>', 'comma-separated roles (first start only)', list, [])
  .option('--environments <list>', 'comma-separated environment names or ids (first start only)', list, [])
  .option('--labels <list>', 'comma-separated labels like zone=a,rack=r1 (first start only)', labels)
  .option('--work <dir>', 'folder packages are unpacked into (default: HOME/work)')
  .option(
    '--cache-mb <n>',
    `bound of the package cache in megabytes; least recently used packages go past it (default ${DEFAULT_CACHE_MB})`,
    megabytes,
  )
  .action(
    async (o: {
      home: string;
      server?: string;
      token?: string;
      name?: string;
      roles: string[];
      environments: string[];
      labels?: Record<string, string>;
      work?: string;
      cacheMb?: number;
    }) => {
      const home = new AgentHome(o.home, o.work);
      home.prepare();
      let log = createAgentLogger(undefined, o.name);
      let identity;
      if (home.hasIdentity()) {
        identity = home.load();
        if (o.token) log.info('already registered; ignoring --token', { machineId: identity.machineId });
        if (o.labels) log.warn(LABELS_AT_REGISTRATION, { machineId: identity.machineId });
      } else {
        if (!o.token || !o.server)
          fail(
            'this agent is not registered yet: give --server and --token (and --name, --roles, --environments, --labels)',
          );
        const name = o.name ?? (await import('node:os')).hostname();
        try {
          identity = await registerWithRetry(
            home,
            {
              serverUrl: o.server!,
              token: o.token!,
              name,
              roles: o.roles,
              environments: o.environments,
              labels: o.labels,
            },
            (e, delay, hint) =>
              log.warn(`registration failed (${e.message}); retrying in ${(delay / 1000).toFixed(1)} s`, { hint }),
          );
          log.info('registered', { machineId: identity.machineId, name, agentUrl: identity.agentUrl });
        } catch (e) {
          fail((e as Error).message);
        }
      }
      log = createAgentLogger(undefined, identity.name);
      const agent = new Agent(home, identity, log, { cacheMb: o.cacheMb });
      let stopping = false;
      const stop = async (sig: string) => {
        if (stopping) return;
        stopping = true;
        log.info(`${sig} received, stopping`);
        await agent.stop();
        process.exit(0);
      };
      process.on('SIGTERM', () => void stop('SIGTERM'));
      process.on('SIGINT', () => void stop('SIGINT'));
      agent.start((e) => {
        console.error(`cuttle agent: ${e.message}`);
        process.exit(new FatalAgentError('').exitCode);
      });
    },
  );

program
  .command('register')
  .description('register this machine with the server and store its identity in --home, then exit (for installers)')
  .requiredOption('--home <dir>', 'folder for the identity')
  .requiredOption('--server <url>', 'server REST URL (https://HOST:8443)', url)
  .requiredOption('--token <token>', 'registration token')
  .option('--name <name>', 'machine name (default: host name)')
  .option('--roles <list>', 'comma-separated roles', list, [])
  .option('--environments <list>', 'comma-separated environment names or ids', list, [])
  .option('--labels <list>', 'comma-separated labels like zone=a,rack=r1', labels)
  .action(
    async (o: {
      home: string;
      server: string;
      token: string;
      name?: string;
      roles: string[];
      environments: string[];
      labels?: Record<string, string>;
    }) => {
      const home = new AgentHome(o.home);
      home.prepare();
      if (home.hasIdentity()) {
        const id = home.load();
        console.log(`already registered as ${id.name} (${id.machineId})`);
        if (o.labels) console.error(`cuttle agent: ${LABELS_AT_REGISTRATION}`);
        return;
      }
      try {
        const id = await registerWithRetry(
          home,
          {
            serverUrl: o.server,
            token: o.token,
            name: o.name ?? (await import('node:os')).hostname(),
            roles: o.roles,
            environments: o.environments,
            labels: o.labels,
          },
          undefined,
          8,
        );
        console.log(`registered as ${id.name} (${id.machineId}); agent URL ${id.agentUrl}`);
      } catch (e) {
        fail((e as Error).message);
      }
    },
  );

function fail(msg: string): never {
  console.error(`cuttle agent: ${msg}`);
  process.exit(new FatalAgentError('').exitCode);
}

try {
  await program.parseAsync(process.argv);
} catch (e) {
  // Commander has printed the problem (or the help, or the version: exit code 0).
  if (e instanceof CommanderError) process.exit(e.exitCode === 0 ? 0 : 2);
  throw e;
}
