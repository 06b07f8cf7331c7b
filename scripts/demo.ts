/**
 * `npm run demo`: a whole Cuttle on this machine. Starts a server on the embedded database (data in ./.cuttle-demo),
 * registers four local agents through tokens, creates a sample project whose process has a rolling step (window 2)
 * with two child actions and a package step (its config file and page get the environment's variables substituted,
 * a sensitive one included), releases it, deploys it with progress bars, shows the deployed site's config file,
 * prints the dashboard URL and admin key, and keeps running until Ctrl-C. Run it again: it reuses the data folder and makes a new release.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import cliProgress from 'cli-progress';
import * as tar from 'tar';
import { ApiError, CuttleClient } from '#shared/client/index.js';
import type {
  Deployment,
  DeploymentProcess,
  Environment,
  Health,
  Lifecycle,
  LogPage,
  Machine,
  Progression,
  Project,
  RegistrationToken,
  Release,
} from '#shared/api/types.js';

const HOME = resolve(process.env.CUTTLE_DEMO_HOME ?? '.cuttle-demo');
const SERVER_HOME = join(HOME, 'server');
const LOGS = join(HOME, 'logs');
const AGENTS = ['web-01', 'web-02', 'web-03', 'web-04'];
const children: ChildProcess[] = [];

const say = (s: string) => process.stdout.write(`${s}\n`);

async function portFree(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = createServer();
    s.once('error', () => res(false));
    s.listen(port, '127.0.0.1', () => s.close(() => res(true)));
  });
}

async function pickPort(preferred: number): Promise<number> {
  if (await portFree(preferred)) return preferred;
  return new Promise((res) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => res(p));
    });
  });
}

function start(name: string, args: string[], env: Record<string, string> = {}): ChildProcess {
  const fd = openSync(join(LOGS, `${name}.log`), 'a');
  const p = spawn(process.execPath, args, {
    env: { ...process.env, CUTTLE_LOG_FORMAT: 'json', ...env },
    stdio: ['ignore', fd, fd],
    detached: true,
  });
  children.push(p);
  return p;
}

async function stopAll() {
  for (const p of children) if (p.exitCode === null) p.kill('SIGTERM');
  const t0 = Date.now();
  while (children.some((p) => p.exitCode === null && p.signalCode === null) && Date.now() - t0 < 10_000)
    await sleep(100);
  for (const p of children) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
}

async function orCreate<T>(create: () => Promise<T>, find: () => Promise<T | undefined>): Promise<T> {
  try {
    return await create();
  } catch (e) {
    if (e instanceof ApiError && e.status === 409) {
      const found = await find();
      if (found) return found;
    }
    throw e;
  }
}

async function main() {
  mkdirSync(LOGS, { recursive: true });
  const port = await pickPort(Number(process.env.CUTTLE_PORT ?? 8443));
  const agentPort = await pickPort(Number(process.env.CUTTLE_AGENT_PORT ?? 10943));
  say(`Starting the Cuttle server (embedded database in ${SERVER_HOME}) ...`);
  const server = start('server', ['dist/server/src/main.js'], {
    CUTTLE_HOME: SERVER_HOME,
    CUTTLE_PORT: String(port),
    CUTTLE_AGENT_PORT: String(agentPort),
    CUTTLE_HOST: '127.0.0.1',
    DATABASE_URL: '',
  });
  const base = `https://127.0.0.1:${port}`;
  const t0 = Date.now();
  let ca: string;
  for (;;) {
    if (server.exitCode !== null)
      throw new Error(`the server exited (${server.exitCode}); see ${join(LOGS, 'server.log')}`);
    if (Date.now() - t0 > 120_000)
      throw new Error(`the server did not start in 2 minutes; see ${join(LOGS, 'server.log')}`);
    try {
      ca = readFileSync(join(SERVER_HOME, 'pki', 'ca.crt'), 'utf8');
      const h = await new CuttleClient(base, undefined, ca).get<Health>('/api/health');
      if (h.status === 'ok') break;
    } catch {
      /* not yet */
    }
    await sleep(300);
  }
  const adminKey = readFileSync(join(SERVER_HOME, 'admin-api-key'), 'utf8').trim();
  const api = new CuttleClient(base, adminKey, ca);
  say(`Server ready on ${base} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

  const env = await orCreate(
    () => api.post<Environment>('/api/environments', { name: 'Demo' }),
    async () => (await api.get<Environment[]>('/api/environments')).find((e) => e.name === 'Demo'),
  );
  // A second environment where the process pauses for a person: something to steer from the dashboard.
  const production = await orCreate(
    () => api.post<Environment>('/api/environments', { name: 'Production' }),
    async () => (await api.get<Environment[]>('/api/environments')).find((e) => e.name === 'Production'),
  );
  const unregistered = AGENTS.filter((n) => !existsSync(join(HOME, 'agents', n, 'identity.json')));
  const token = unregistered.length
    ? (
        await api.post<RegistrationToken>('/api/registration-tokens', {
          environmentIds: [env.id, production.id],
          roles: ['web'],
          maxUses: unregistered.length,
          expiresInSeconds: 600,
        })
      ).token
    : '';
  for (const name of AGENTS) {
    const home = join(HOME, 'agents', name);
    mkdirSync(home, { recursive: true });
    const args = ['dist/agent/src/main.js', 'run', '--home', home];
    if (unregistered.includes(name))
      args.push(
        '--server',
        base,
        '--token',
        token,
        '--name',
        name,
        '--roles',
        'web',
        '--environments',
        'Demo,Production',
      );
    start(`agent-${name}`, args);
  }
  say(
    `Starting 4 agents (${unregistered.length ? `registering ${unregistered.join(', ')} with a token` : 'already registered'}) ...`,
  );
  for (const t1 = Date.now(); ;) {
    const ms = await api.get<Machine[]>('/api/machines');
    const online = ms.filter((m) => AGENTS.includes(m.name) && m.status === 'online');
    if (online.length === AGENTS.length) break;
    if (Date.now() - t1 > 60_000)
      throw new Error(`agents not online after 60 s (${online.map((m) => m.name).join(', ')}); see ${LOGS}`);
    await sleep(300);
  }
  say('Agents online: ' + AGENTS.join(', '));
  for (const m of await api.get<Machine[]>('/api/machines')) {
    if (AGENTS.includes(m.name) && !m.environmentIds.includes(production.id))
      await api.request('PATCH', `/api/machines/${m.id}`, { environmentIds: [env.id, production.id] });
  }

  // A package: a small website with a deploy.sh, versioned by time so every run makes a new one. Its page and its
  // config file hold #{...} references the agent replaces with the environment's values after unpacking
  // (substituteInFiles); deploy.sh reads one with get_cuttle_variable and shows the config file, the sensitive
  // value masked in the log.
  const stamp = new Date().toISOString().replace(/\D/g, '').slice(0, 14);
  const version = `1.0.${stamp}`;
  const src = mkdtempSync(join(HOME, 'pkg-'));
  writeFileSync(
    join(src, 'index.html'),
    `<h1>Cuttle demo site #{Cuttle.Release.Number}</h1>\n<p>#{Site.Greeting} from #{Cuttle.Machine.Name} in #{Cuttle.Environment.Name}</p>\n`,
  );
  mkdirSync(join(src, 'config'));
  writeFileSync(
    join(src, 'config', 'site.conf'),
    'greeting = #{Site.Greeting}\ndatabase = #{Site.DbHost}\ndatabase_password = #{Site.DbPassword}\nserver_name = #{Cuttle.Machine.Name}\n',
  );
  writeFileSync(
    join(src, 'deploy.sh'),
    [
      '#!/bin/bash',
      'set -e',
      'echo "Installing site into $PWD for $(get_cuttle_variable Cuttle.Environment.Name)"',
      'echo "config/site.conf after substitution:"',
      'sed "s/^/    /" config/site.conf',
      'sleep 0.5',
      'echo "Site is live on $CUTTLE_MACHINE_NAME"',
      '',
    ].join('\n'),
    { mode: 0o755 },
  );
  const pkgFile = `${src}.tar.gz`;
  await tar.c({ gzip: true, file: pkgFile, cwd: src, portable: true }, ['index.html', 'config', 'deploy.sh']);
  await api.request('POST', `/api/packages/demo-site/${version}`, undefined, {
    data: readFileSync(pkgFile),
    contentType: 'application/gzip',
  });
  rmSync(src, { recursive: true, force: true });
  rmSync(pkgFile, { force: true });

  const project = await orCreate(
    () =>
      api.post<Project>('/api/projects', { name: 'Demo Website', description: 'Sample project made by npm run demo' }),
    () => api.get<Project>(`/api/projects/${encodeURIComponent('Demo Website')}`),
  );
  const proc = await api.get<DeploymentProcess>(`/api/projects/${project.id}/deployment-process`);
  await api.put(`/api/projects/${project.id}/deployment-process`, {
    version: proc.version,
    steps: [
      {
        name: 'Rolling restart',
        targetRoles: ['web'],
        windowSize: 2,
        actions: [
          {
            name: 'Drain',
            type: 'script',
            script:
              'echo "Draining $CUTTLE_MACHINE_NAME"\nfor i in 1 2 3; do echo "connections left: $((3 - i))"; sleep 0.5; done',
          },
          {
            name: 'Restart',
            type: 'script',
            script: 'echo "Restarting the app on $CUTTLE_MACHINE_NAME"\nsleep 1\necho "healthy"',
          },
        ],
      },
      {
        name: 'Approve production',
        actions: [
          {
            name: 'Sign-off',
            type: 'manual-intervention',
            environmentIds: [production.id],
            instructions:
              'The app restarted on every web server. Check it, then proceed to publish the site (or abort).',
          },
        ],
      },
      {
        name: 'Website',
        targetRoles: ['web'],
        windowSize: '50%',
        actions: [
          {
            name: 'Deploy site',
            type: 'package',
            packageId: 'demo-site',
            substituteInFiles: ['config/*.conf', 'index.html'],
          },
        ],
      },
    ],
  });
  // Production sits behind a lifecycle: a release reaches it only after it succeeded in Demo (promotion).
  const lifecycle = await orCreate(
    () =>
      api.post<Lifecycle>('/api/lifecycles', {
        name: 'Default',
        phases: [
          { name: 'Demo', environmentIds: [env.id] },
          { name: 'Production', environmentIds: [production.id] },
        ],
      }),
    () => api.get<Lifecycle>('/api/lifecycles/Default'),
  );
  await api.request('PATCH', `/api/projects/${project.id}`, { lifecycleId: lifecycle.id });
  // Per environment values for the site's config file; the password is sensitive: masked in every log.
  const vars = await api.get<{ version: number }>(`/api/projects/${project.id}/variables`);
  await api.put(`/api/projects/${project.id}/variables`, {
    version: vars.version,
    variables: [
      { name: 'Site.Greeting', value: 'Hello' },
      { name: 'Site.Greeting', value: 'Welcome to production', scope: { environmentIds: [production.id] } },
      { name: 'Site.DbHost', value: 'db.demo.internal' },
      { name: 'Site.DbHost', value: 'db.production.internal', scope: { environmentIds: [production.id] } },
      { name: 'Site.DbPassword', value: `demo-${stamp}`, sensitive: true },
    ],
  });
  // Two installation folders of the site on each agent: older ones go after each successful deployment.
  await api.request('PATCH', `/api/projects/${project.id}`, { retention: { keepReleases: 2 } });
  const release = await api.post<Release>('/api/releases', { projectId: project.id, version });
  // Show the refusal, asked only while the lifecycle holds Production back (it could have been edited since).
  const before = await api.get<Progression>(`/api/releases/${release.id}/progression`);
  if (!before.allowedEnvironmentIds.includes(production.id))
    await api.post('/api/deployments', { releaseId: release.id, environmentId: production.id }).catch((e: unknown) => {
      if (!(e instanceof ApiError && e.code === 'lifecycle_blocked')) throw e;
      say(`Straight to Production is refused by lifecycle ${lifecycle.name}: ${e.messages[0]}`);
    });
  say(`Release ${release.version} of ${project.name} created; deploying to ${env.name} ...`);
  const dep = await api.post<Deployment>('/api/deployments', { releaseId: release.id, environmentId: env.id });

  // Bars on a terminal; on anything else (CI, a pipe) one line per change, which reads well in a log.
  const tty = !!process.stdout.isTTY;
  const bars = tty
    ? new cliProgress.MultiBar(
        { format: ' {step} |{bar}| {value}/{total} targets  {status}', hideCursor: true, clearOnComplete: false },
        cliProgress.Presets.shades_classic,
      )
    : undefined;
  const stepBars = dep.steps.map((s) =>
    bars?.create(Math.max(1, s.targets.length), 0, { step: s.name.padEnd(16), status: 'pending' }),
  );
  const lastLine: string[] = [];
  let d = dep;
  while (!['success', 'failed', 'cancelled'].includes(d.state)) {
    await sleep(250);
    d = await api.get<Deployment>(`/api/deployments/${dep.id}`);
    d.steps.forEach((s, i) => {
      const done = s.targets.filter((t) => ['success', 'failed', 'skipped', 'cancelled'].includes(t.state)).length;
      const running = s.targets.filter((t) => t.state === 'running').length;
      const failed = s.targets.filter((t) => t.state === 'failed').length;
      const status = `${s.state}${running ? `, ${running} in flight (window ${s.windowSize})` : ''}${failed ? `, ${failed} failed` : ''}`;
      if (bars) stepBars[i]!.update(done, { status });
      else {
        const line = ` ${s.name}: ${done}/${s.targets.length} targets done, ${status}`;
        if (line !== lastLine[i]) say(line);
        lastLine[i] = line;
      }
    });
  }
  bars?.stop();
  say(
    `\nDeployment ${d.state.toUpperCase()} in ${((new Date(d.finishedAt!).getTime() - new Date(d.startedAt!).getTime()) / 1000).toFixed(1)} s. Last log lines:`,
  );
  const log = await api.get<LogPage>(`/api/deployments/${dep.id}/log?afterSeq=0&limit=10000`);
  for (const e of log.entries.slice(-8)) say(`  ${e.at.slice(11, 19)} ${e.level.padEnd(5)} ${e.text}`);
  const prog = await api.get<Progression>(`/api/releases/${release.id}/progression`);
  const allowed = prog.phases.flatMap((p) => p.environments).filter((e) => e.allowed);
  say(
    `\nLifecycle ${lifecycle.name}: release ${release.version} may now go to ${allowed.map((e) => e.environmentName).join(', ')}` +
      (allowed.some((e) => e.environmentId === production.id) ? ' (promoted past the Demo phase)' : ''),
  );
  // The deployed site on web-01: its page and config file as the agent wrote them, variables substituted.
  const site = join(HOME, 'agents', 'web-01', 'work', 'demo-site', version);
  if (existsSync(join(site, 'config', 'site.conf'))) {
    say(`\nThe deployed site on web-01 (${site}):`);
    say(`  index.html:\n${indent(readFileSync(join(site, 'index.html'), 'utf8'))}`);
    say(`  config/site.conf (substituted on the agent; only the log masks the password):`);
    say(indent(readFileSync(join(site, 'config', 'site.conf'), 'utf8')));
  }
  say(`
Dashboard:   ${base}/   (the certificate is signed by the demo's own CA: ${join(SERVER_HOME, 'pki', 'ca.crt')})
Admin key:   ${adminKey}
Try:         curl -sk -H "X-Api-Key: ${adminKey}" ${base}/api/deployments/${dep.id}
Logs:        ${LOGS}

In the dashboard, open Projects → ${project.name}: release ${release.version} shows its progression through lifecycle
${lifecycle.name} (Demo → Production). Press Deploy… on it and choose Production (offered once Demo succeeded): the
preview shows what runs where; the deployment rolls, then waits for your approval before publishing the site.
Or: cuttle promote --project "${project.name}" --release ${release.version} --from Demo --to Production --wait
Press Ctrl-C to stop the server and the agents.`);
}

const indent = (text: string) =>
  text
    .trimEnd()
    .split('\n')
    .map((l) => `    ${l}`)
    .join('\n');

let stopping = false;
const shutdown = async (code: number) => {
  if (stopping) return;
  stopping = true;
  say('\nStopping the agents and the server ...');
  await stopAll();
  process.exit(code);
};
process.on('SIGINT', () => void shutdown(0));
process.on('SIGTERM', () => void shutdown(0));

main().catch(async (e) => {
  console.error(`demo failed: ${(e as Error).message}`);
  await shutdown(1);
});
