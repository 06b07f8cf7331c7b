#!/usr/bin/env node
/**
 * `cuttle`: the command line for operators and CI pipelines (docs/api.md, "The cuttle CLI"). Every command takes
 * --json. Exit codes: 0 success; 1 the deployment failed; 2 bad usage or a request refused; 3 cancelled.
 */
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Command, CommanderError } from 'commander';
import cliProgress from 'cli-progress';
import type {
  AuditEvent,
  ApiKey,
  ApiKeyCreated,
  Deployment,
  DeploymentSummary,
  Environment,
  Interruption,
  Lifecycle,
  LogPage,
  Machine,
  Me,
  Progression,
  Project,
  Release,
  SteerAccepted,
  StepRun,
} from '#shared/api/types.js';
import { ApiError, CuttleClient } from '#shared/client/index.js';
import { formatLabels, parseLabelSelector } from '#shared/labels/index.js';
import { CUTTLE_VERSION } from '#shared/version.js';
import { loadConfig, saveConfig, type CliConfig } from './config.js';

const EXIT = { success: 0, failed: 1, usage: 2, cancelled: 3 } as const;
const TERMINAL: readonly string[] = ['success', 'failed', 'cancelled'];

class UsageError extends Error {}

let json = false;
const out = (human: string, data: unknown): void => {
  process.stdout.write(json ? JSON.stringify(data, null, 2) + '\n' : human + (human.endsWith('\n') ? '' : '\n'));
};

function client(cfg: CliConfig = loadConfig()): CuttleClient {
  if (!cfg.server)
    throw new UsageError(
      'no server: run `cuttle login --server URL --api-key KEY`, or set CUTTLE_SERVER and CUTTLE_API_KEY',
    );
  if (!cfg.apiKey) throw new UsageError('no API key: run `cuttle login`, or set CUTTLE_API_KEY');
  if (cfg.insecure) process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
  return new CuttleClient(cfg.server, cfg.apiKey, cfg.ca);
}

function table<R extends object>(rows: R[], cols: Array<keyof R & string>): string {
  if (!rows.length) return '(none)';
  const cell = (v: unknown) => (v === null || v === undefined ? '' : Array.isArray(v) ? v.join(',') : String(v));
  const w = cols.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)));
  const line = (vals: string[]) =>
    vals
      .map((v, i) => v.padEnd(w[i]))
      .join('  ')
      .trimEnd();
  return [line(cols.map((c) => c.toUpperCase())), ...rows.map((r) => line(cols.map((c) => cell(r[c]))))].join('\n');
}

async function findProject(api: CuttleClient, ref: string) {
  return api.get<Project>(`/api/projects/${encodeURIComponent(ref)}`);
}

async function findRelease(api: CuttleClient, projectId: string, version: string) {
  const list = await api.get<Release[]>(`/api/releases?projectId=${projectId}`);
  const r = list.find((x) => x.version === version);
  if (!r) throw new UsageError(`project has no release ${version}`);
  return r;
}

/** Where an interruption is: step/action (a batch approval has no action). */
const whereOf = (i: Interruption) => (i.actionName ? `${i.stepName}/${i.actionName}` : i.stepName);

/**
 * A step rolled in several batches: the batch in progress ("batch 2/3") and what it waits for before the next one
 * ("baking 20 s", "health checks", "waiting for approval"). `exact: false` leaves the seconds out, so that a line per
 * change is printed when the bake starts, not every second of it.
 */
function rollout(s: StepRun, exact = true): { batch: string; gate: string } {
  const batch = s.batchCount > 1 && s.currentBatch !== null ? `batch ${s.currentBatch + 1}/${s.batchCount}` : '';
  const left = s.bakeUntil ? Math.max(0, Math.ceil((Date.parse(s.bakeUntil) - Date.now()) / 1000)) : null;
  const gate =
    s.gate === 'bake'
      ? exact && left !== null
        ? `baking ${left} s`
        : 'baking'
      : s.gate === 'health-check'
        ? 'health checks'
        : s.gate === 'approval'
          ? 'waiting for approval'
          : '';
  return { batch, gate };
}

/** Follows a deployment to its end, with a progress bar per step on a terminal and a line per change otherwise. */
async function follow(api: CuttleClient, id: string): Promise<Deployment> {
  const tty = !!process.stderr.isTTY && !json;
  let d = await api.get<Deployment>(`/api/deployments/${id}`);
  // A scheduled deployment has no steps laid out until its time: wait for it first, then show its progress.
  if (d.state === 'scheduled') {
    if (!json)
      process.stderr.write(
        `scheduled: queued at ${d.queueAt}${d.queueExpiresAt ? `, cancelled if not started by ${d.queueExpiresAt}` : ''}\n`,
      );
    while (d.state === 'scheduled') {
      await sleep(1000);
      d = await api.get<Deployment>(`/api/deployments/${id}`);
    }
  }
  const bars = tty
    ? new cliProgress.MultiBar(
        {
          format: ' {step} |{bar}| {value}/{total} targets {status}',
          hideCursor: true,
          clearOnComplete: false,
          stream: process.stderr,
        },
        cliProgress.Presets.shades_classic,
      )
    : undefined;
  const stepBars = d.steps.map((s) =>
    bars?.create(Math.max(1, s.targets.length), 0, { step: s.name.slice(0, 20).padEnd(20), status: '' }),
  );
  const last: string[] = [];
  const told = new Set<string>();
  let queuedBehind: string | undefined;
  let paused = false;
  const say = (msg: string) => {
    if (bars) bars.log(msg + '\n');
    else if (!json) process.stderr.write(msg + '\n');
  };
  for (;;) {
    if (d.queuedBehind && d.queuedBehind !== queuedBehind)
      say(`queued behind deployment ${d.queuedBehind} (deployments of a project to an environment run one at a time)`);
    queuedBehind = d.queuedBehind;
    if ((d.state === 'paused') !== paused)
      say(d.state === 'paused' ? `paused: no new target starts (resume with: cuttle resume ${id})` : 'resumed');
    paused = d.state === 'paused';
    d.steps.forEach((s, i) => {
      const done = s.targets.filter((t) => TERMINAL.includes(t.state) || t.state === 'skipped').length;
      const failed = s.targets.filter((t) => t.state === 'failed').length;
      const running = s.targets.filter((t) => t.state === 'running').length;
      const waiting = s.targets.filter((t) => t.waitingFor === 'machine').length;
      const state = d.state === 'queued' ? 'queued' : paused && s.state === 'running' ? 'paused' : s.state;
      const status = (gate: string, batch = '') =>
        `${state}${batch ? `, ${batch}` : ''}${gate ? `, ${gate}` : ''}${running ? `, ${running}/${s.windowSize} in flight` : ''}${waiting ? `, ${waiting} waiting for busy machines` : ''}${failed ? `, ${failed} failed` : ''}`;
      const { batch, gate } = rollout(s);
      // " Web |████░░| 3/6 targets running, batch 2/3, baking 20 s"
      if (bars) stepBars[i]?.update(done, { status: status(gate, batch) });
      else if (!json) {
        // "Web: batch 2/3, 3/6 targets done, running" for a batched step; "Web: 2/2 targets, success" otherwise.
        const line = (g: string) =>
          batch
            ? `${s.name}: ${batch}, ${done}/${s.targets.length} targets done, ${status(g)}`
            : `${s.name}: ${done}/${s.targets.length} targets, ${status(g)}`;
        const key = line(rollout(s, false).gate);
        if (key !== last[i]) process.stderr.write(line(gate) + '\n');
        last[i] = key;
      }
    });
    if (d.state === 'waiting') {
      for (const i of await api.get<Interruption[]>(`/api/interruptions?deploymentId=${id}&state=pending`)) {
        if (told.has(i.id)) continue;
        told.add(i.id);
        say(
          `waiting on ${i.kind} ${whereOf(i)}${i.machineName ? ` on ${i.machineName}` : ''}: ${i.instructions ?? ''}\n  answer with: cuttle submit ${i.id} --result ${i.allowedResults.join('|')}`,
        );
      }
    }
    if (TERMINAL.includes(d.state)) break;
    await sleep(500);
    d = await api.get<Deployment>(`/api/deployments/${id}`);
  }
  bars?.stop();
  return d;
}

const exitFor = (state: string) =>
  state === 'success' ? EXIT.success : state === 'cancelled' ? EXIT.cancelled : EXIT.failed;

const program = new Command('cuttle')
  .description('Cuttle deployment orchestrator: command line')
  // Not --version: create-release and deploy take --version/--release for the release.
  .version(CUTTLE_VERSION, '-V, --cli-version', 'print the CLI version')
  .option('--json', 'machine-readable output')
  .hook('preAction', (root, action) => {
    json = !!action.opts().json || !!root.opts().json;
  })
  .exitOverride()
  .configureOutput({ writeErr: (s) => process.stderr.write(s) });

program
  .command('login')
  .description('check and store the server URL and API key')
  .requiredOption('--server <url>', 'https://host:8443')
  .requiredOption('--api-key <key>', 'an API key')
  .option('--ca <file>', "the server CA's certificate ($CUTTLE_HOME/pki/ca.crt)")
  .option('--insecure', 'do not verify the server certificate (testing only)')
  .option('--json')
  .action(async (o) => {
    const cfg: CliConfig = {
      server: o.server.replace(/\/+$/, ''),
      apiKey: o.apiKey,
      ca: o.ca ? readFileSync(o.ca, 'utf8') : undefined,
      insecure: !!o.insecure,
    };
    const envs = await client(cfg).get<Environment[]>('/api/environments');
    const file = saveConfig(cfg);
    out(`logged in to ${cfg.server} (${envs.length} environments); saved to ${file}`, {
      server: cfg.server,
      configFile: file,
    });
  });

/** A key's scope for people: "all" or the names of what it is limited to. */
function scopeText(ids: string[] | null, names: Map<string, string>): string {
  return ids ? ids.map((i) => names.get(i) ?? i).join(',') : 'all';
}

/** Environment and project names by id, to show scopes by name. */
async function namesById(api: CuttleClient): Promise<{ envs: Map<string, string>; projects: Map<string, string> }> {
  const [envs, projects] = await Promise.all([
    api.get<Environment[]>('/api/environments'),
    api.get<Project[]>('/api/projects'),
  ]);
  return {
    envs: new Map(envs.map((e) => [e.id, e.name])),
    projects: new Map(projects.map((p) => [p.id, p.name])),
  };
}

/** "a,b, c" → ["a","b","c"]. */
const listOf = (s: string) =>
  s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);

program
  .command('whoami')
  .description('the API key in use: its name, role, scope and what it may do')
  .option('--json')
  .action(async () => {
    const api = client();
    const me = await api.get<Me>('/api/me');
    const names = await namesById(api);
    out(
      [
        `${me.name} (${me.role})`,
        `environments: ${scopeText(me.environmentIds, names.envs)}`,
        `projects: ${scopeText(me.projectIds, names.projects)}`,
        `may: ${me.permissions.join(', ')}`,
      ].join('\n'),
      me,
    );
  });

const apiKeys = program.command('api-keys').description('API keys and their roles (admin)');
apiKeys
  .command('create')
  .description('create an API key; the key is printed this once')
  .requiredOption('--name <name>', 'who or what uses it')
  .requiredOption('--role <role>', 'viewer | deployer | approver | admin')
  .option('--environments <names>', 'limit it to these environments (names or ids, comma-separated)')
  .option('--projects <names>', 'limit it to these projects (names or ids, comma-separated)')
  .option('--json')
  .action(async (o) => {
    const k = await client().post<ApiKeyCreated>('/api/api-keys', {
      name: o.name,
      role: o.role,
      ...(o.environments ? { environmentIds: listOf(o.environments) } : {}),
      ...(o.projects ? { projectIds: listOf(o.projects) } : {}),
    });
    if (!json) process.stderr.write(`created API key ${k.name} (${k.role}), id ${k.id}; the key is shown this once:\n`);
    out(k.key, k);
  });
apiKeys
  .command('list')
  .description('list API keys with their role and scope')
  .option('--json')
  .action(async () => {
    const api = client();
    const list = await api.get<ApiKey[]>('/api/api-keys');
    const names = await namesById(api);
    out(
      table(
        list.map((k) => ({
          ...k,
          environments: scopeText(k.environmentIds, names.envs),
          projects: scopeText(k.projectIds, names.projects),
          revoked: k.revokedAt ?? '',
        })),
        ['name', 'id', 'role', 'environments', 'projects', 'revoked'],
      ),
      list,
    );
  });
apiKeys
  .command('revoke <id>')
  .description('revoke an API key (by id or name); it stops working at once')
  .option('--json')
  .action(async (ref: string) => {
    const api = client();
    const list = await api.get<ApiKey[]>('/api/api-keys');
    const k = list.find((x) => x.id === ref || x.name === ref);
    if (!k) throw new UsageError(`no API key ${ref}`);
    await api.request('DELETE', `/api/api-keys/${k.id}`);
    out(`revoked API key ${k.name}`, { id: k.id, name: k.name, revoked: true });
  });

program
  .command('environments')
  .description('list environments')
  .option('--json')
  .action(async () => {
    const envs = await client().get<Environment[]>('/api/environments');
    out(table(envs, ['name', 'id', 'guidedFailure', 'rollbackOnFailure']), envs);
  });

program
  .command('machines')
  .description('list deployment targets')
  .option('--environment <name>', 'only this environment')
  .option('--role <role>', 'only this role')
  .option('--label <name=value>', 'only machines with this label value, like zone=a')
  .option('--json')
  .action(async (o) => {
    if (o.label !== undefined) {
      const sel = parseLabelSelector(o.label, '--label');
      if (!sel.ok) throw new UsageError(sel.message);
    }
    const api = client();
    let q = '';
    if (o.environment) {
      const env = (await api.get<Environment[]>('/api/environments')).find(
        (e) => e.name === o.environment || e.id === o.environment,
      );
      if (!env) throw new UsageError(`no environment ${o.environment}`);
      q = `?environmentId=${env.id}`;
    }
    if (o.role) q += `${q ? '&' : '?'}role=${encodeURIComponent(o.role)}`;
    if (o.label !== undefined) q += `${q ? '&' : '?'}label=${encodeURIComponent(o.label)}`;
    const ms = await api.get<Machine[]>(`/api/machines${q}`);
    const rows = ms.map((m) => ({ ...m, labels: formatLabels(m.labels) }));
    out(table(rows, ['name', 'status', 'health', 'roles', 'labels', 'disabled', 'lastSeenAt', 'agentVersion']), ms);
  });

program
  .command('events')
  .description('the audit log, newest first: every change and every refused request, with who made it')
  .option('--actor <name>', "only this actor (an API key's name, anonymous, invalid key)")
  .option('--resource-type <type>', 'only this kind of resource: project, deployment, machine, environment, …')
  .option('--resource-id <id>', 'only this resource (a project or environment may be given by name)')
  .option('--outcome <outcome>', 'only ok, denied or failed')
  .option('--since <time>', 'only events at or after this ISO-8601 time')
  .option('--before <eventId>', 'only events older than this one (the next page)')
  .option('--limit <n>', 'at most this many (1 to 1000; default 100)')
  .option('--json')
  .action(async (o) => {
    const api = client();
    let resourceId: string | undefined = o.resourceId;
    // Names where ids are expected: a project's or environment's name is looked up (events store ids).
    if (resourceId && !/^[0-9a-f-]{36}$/i.test(resourceId)) {
      if (o.resourceType === 'project') resourceId = (await findProject(api, resourceId)).id;
      else if (o.resourceType === 'environment') {
        const env = (await api.get<Environment[]>('/api/environments')).find((e) => e.name === resourceId);
        if (!env) throw new UsageError(`no environment ${resourceId}`);
        resourceId = env.id;
      }
    }
    const params = new URLSearchParams();
    const add = (k: string, v: unknown) => v !== undefined && params.set(k, String(v));
    add('actor', o.actor);
    add('resourceType', o.resourceType);
    add('resourceId', resourceId);
    add('outcome', o.outcome);
    add('since', o.since);
    add('before', o.before);
    add('limit', o.limit);
    const q = params.toString();
    const events = await api.get<AuditEvent[]>(`/api/events${q ? `?${q}` : ''}`);
    const rows = events.map((e) => ({
      ...e,
      resource: e.resourceId ? `${e.resourceType} ${e.resourceId}` : e.resourceType,
    }));
    out(table(rows, ['id', 'at', 'actor', 'action', 'outcome', 'resource', 'summary']), events);
  });

program
  .command('create-release')
  .description('create a release of a project')
  .requiredOption('--project <name>', 'project name, slug or id')
  .requiredOption('--version <version>', 'release version')
  .option('--channel <name>', 'channel name or id')
  .option('--package <id:version...>', 'package versions (default: the newest in the feed)')
  .option('--json')
  .action(async (o) => {
    const api = client();
    const project = await findProject(api, o.project);
    const packages: Record<string, string> = {};
    for (const p of o.package ?? []) {
      const [id, version] = String(p).split(':');
      if (!id || !version) throw new UsageError(`--package ${p}: expected ID:VERSION`);
      packages[id] = version;
    }
    const r = await api.post<Release>('/api/releases', {
      projectId: project.id,
      version: o.version,
      ...(o.channel ? { channelId: o.channel } : {}),
      ...(Object.keys(packages).length ? { packages } : {}),
    });
    out(
      `release ${r.version} of ${project.name} created (${r.id})${r.packages.length ? `; packages ${r.packages.map((p) => `${p.packageId} ${p.version}`).join(', ')}` : ''}`,
      r,
    );
  });

program
  .command('deploy')
  .description('deploy a release to an environment')
  .requiredOption('--project <name>', 'project name, slug or id')
  .requiredOption('--release <version>', 'release version')
  .requiredOption('--environment <name>', 'environment name or id')
  .option('--wait', 'follow the deployment with progress until it ends; the exit code tells how it ended')
  .option('--guided-failure', 'wait for an operator on a failed target instead of failing the step')
  .option('--at <time>', 'schedule it: queued at this ISO-8601 time (like 2026-12-24T18:00:00Z), scheduled until then')
  .option('--expires <time>', 'cancel it if it has not started by this ISO-8601 time')
  .option('--json')
  .action(async (o) => {
    for (const [option, v] of [
      ['--at', o.at],
      ['--expires', o.expires],
    ] as const)
      if (v !== undefined && Number.isNaN(Date.parse(v)))
        throw new UsageError(`${option} must be an ISO-8601 time like 2026-12-24T18:00:00Z (got ${v})`);
    const api = client();
    const project = await findProject(api, o.project);
    const release = await findRelease(api, project.id, o.release);
    const dep = await api.post<Deployment>('/api/deployments', {
      releaseId: release.id,
      environmentId: o.environment,
      ...(o.guidedFailure ? { guidedFailure: true } : {}),
      ...(o.at ? { queueAt: o.at } : {}),
      ...(o.expires ? { queueExpiresAt: o.expires } : {}),
    });
    if (!json)
      process.stderr.write(
        `${dep.state === 'scheduled' ? `scheduled for ${dep.queueAt}` : 'deploying'} ${project.name} ${release.version} to ${o.environment}: deployment ${dep.id}\n`,
      );
    if (!o.wait) return out(dep.id, dep);
    const d = await follow(api, dep.id);
    out(`deployment ${d.id} ${d.state}`, d);
    process.exitCode = exitFor(d.state);
  });

program
  .command('deployments')
  .description('list deployments, newest first (scheduled ones with their time, trigger ones with their machine)')
  .option('--project <name>', 'only this project (name, slug or id)')
  .option('--environment <name>', 'only this environment (name or id)')
  .option('--state <state>', 'only this state, like scheduled, queued, executing, failed')
  .option('--limit <n>', 'at most this many', '50')
  .option('--json')
  .action(async (o) => {
    const limit = Number(o.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000)
      throw new UsageError(`--limit must be a whole number from 1 to 1000 (got ${o.limit})`);
    const api = client();
    const q = new URLSearchParams({ limit: String(limit) });
    if (o.project) q.set('projectId', (await findProject(api, o.project)).id);
    if (o.environment) q.set('environmentId', (await findEnvironment(api, o.environment, '--environment')).id);
    if (o.state) q.set('state', o.state);
    const list = await api.get<DeploymentSummary[]>(`/api/deployments?${q}`);
    const rows = list.map((d) => ({
      ...d,
      note: d.queueAt && d.state === 'scheduled' ? `at ${d.queueAt}` : (d.error ?? ''),
      by: d.trigger ? `trigger (${d.trigger})` : (d.createdBy?.name ?? ''),
    }));
    out(table(rows, ['id', 'state', 'createdAt', 'by', 'note']), list);
  });

/** An environment by name or id. */
async function findEnvironment(api: CuttleClient, ref: string, option: string) {
  const env = (await api.get<Environment[]>('/api/environments')).find((e) => e.name === ref || e.id === ref);
  if (!env) throw new UsageError(`${option}: no environment ${ref}`);
  return env;
}

program
  .command('promote')
  .description("deploy a release that succeeded in one environment to the next (its lifecycle's next phase)")
  .requiredOption('--project <name>', 'project name, slug or id')
  .requiredOption('--release <version>', 'release version')
  .requiredOption('--from <environment>', 'where the release last succeeded')
  .requiredOption('--to <environment>', 'where it goes now')
  .option('--wait', 'follow the deployment with progress until it ends; the exit code tells how it ended')
  .option('--json')
  .action(async (o) => {
    const api = client();
    const project = await findProject(api, o.project);
    const release = await findRelease(api, project.id, o.release);
    const from = await findEnvironment(api, o.from, '--from');
    const to = await findEnvironment(api, o.to, '--to');
    // Promotion takes what proved itself: the release's newest deployment to --from must have succeeded. The
    // progression has it for every environment of the lifecycle; one outside it is looked up in the history.
    const prog = await api.get<Progression>(`/api/releases/${release.id}/progression`);
    const inPhase = prog.phases.flatMap((p) => p.environments).find((e) => e.environmentId === from.id);
    const last = inPhase
      ? inPhase.lastDeployment && { id: inPhase.lastDeployment.id, state: inPhase.lastDeployment.status }
      : (
          await api.get<DeploymentSummary[]>(
            `/api/deployments?projectId=${project.id}&environmentId=${from.id}&limit=1000`,
          )
        ).find((d) => d.releaseId === release.id);
    if (last?.state !== 'success')
      throw new UsageError(
        last
          ? `release ${release.version} cannot be promoted from ${from.name}: its last deployment there (${last.id}) is ${last.state}, not success`
          : `release ${release.version} cannot be promoted from ${from.name}: it was never deployed there`,
      );
    const dep = await api.post<Deployment>('/api/deployments', { releaseId: release.id, environmentId: to.id });
    if (!json)
      process.stderr.write(
        `promoting ${project.name} ${release.version} from ${from.name} to ${to.name}: deployment ${dep.id}\n`,
      );
    if (!o.wait) return out(dep.id, dep);
    const d = await follow(api, dep.id);
    out(`deployment ${d.id} ${d.state}`, d);
    process.exitCode = exitFor(d.state);
  });

program
  .command('progression')
  .description("where a release went in its lifecycle's phases, and where it may go now")
  .requiredOption('--project <name>', 'project name, slug or id')
  .requiredOption('--release <version>', 'release version')
  .option('--json')
  .action(async (o) => {
    const api = client();
    const project = await findProject(api, o.project);
    const release = await findRelease(api, project.id, o.release);
    const p = await api.get<Progression>(`/api/releases/${release.id}/progression`);
    const rows = p.phases.flatMap((ph) =>
      ph.environments.map((e) => ({
        phase: `${ph.name}${ph.optional ? ' (optional)' : ''}${ph.complete ? ' ✓' : ''}`,
        environment: e.environmentName,
        last: e.lastDeployment?.status ?? '-',
        allowed: e.allowed ? 'yes' : `no: ${e.reason ?? ''}`,
      })),
    );
    const head = `release ${release.version} of ${project.name}: ${p.lifecycle ? `lifecycle ${p.lifecycle.name}` : 'no lifecycle (every environment allowed)'}`;
    out(`${head}\n${table(rows, ['phase', 'environment', 'last', 'allowed'])}`, p);
  });

/** `Name:env1,env2[:min][:optional]`, as `cuttle lifecycles create --phase` takes it. */
function parsePhase(spec: string) {
  const [name, envs, ...rest] = spec.split(':');
  if (!name?.trim() || !envs?.trim())
    throw new UsageError(`--phase ${spec}: expected NAME:ENV1,ENV2[:MINIMUM][:optional]`);
  const phase: Record<string, unknown> = { name: name.trim(), environmentIds: envs.split(',').map((e) => e.trim()) };
  for (const r of rest) {
    if (/^\d+$/.test(r)) phase.minimumEnvironmentsBeforePromotion = Number(r);
    else if (r === 'optional') phase.optional = true;
    else throw new UsageError(`--phase ${spec}: "${r}" is neither a minimum (a number) nor "optional"`);
  }
  return phase;
}

const lifecycles = program.command('lifecycles').description('lifecycles: the phases releases are promoted through');
lifecycles
  .command('list', { isDefault: true })
  .description('list lifecycles with their phases')
  .option('--json')
  .action(async () => {
    const api = client();
    const [list, envs] = await Promise.all([
      api.get<Lifecycle[]>('/api/lifecycles'),
      api.get<Environment[]>('/api/environments'),
    ]);
    const name = (id: string) => envs.find((e) => e.id === id)?.name ?? id;
    const rows = list.map((l) => ({
      name: l.name,
      phases: l.phases
        .map(
          (p) =>
            `${p.name}(${p.environmentIds.map(name).join(',')}${p.minimumEnvironmentsBeforePromotion ? ` min ${p.minimumEnvironmentsBeforePromotion}` : ''}${p.optional ? ' optional' : ''})`,
        )
        .join(' → '),
      id: l.id,
    }));
    out(table(rows, ['name', 'phases', 'id']), list);
  });
lifecycles
  .command('create')
  .description('create a lifecycle')
  .requiredOption('--name <name>', 'lifecycle name')
  .requiredOption('--phase <spec...>', 'a phase, in order: NAME:ENV1,ENV2[:MINIMUM][:optional] (MINIMUM 0 = all)')
  .option('--json')
  .action(async (o) => {
    const phases = (o.phase as string[]).map(parsePhase);
    const l = await client().post<Lifecycle>('/api/lifecycles', { name: o.name, phases });
    out(`lifecycle ${l.name} created (${l.id}): ${l.phases.map((p) => p.name).join(' → ')}`, l);
  });

program
  .command('interruptions')
  .description('list pending interruptions (manual interventions, guided failures)')
  .option('--deployment <id>', 'only this deployment')
  .option('--all', 'answered ones too')
  .option('--json')
  .action(async (o) => {
    const q = new URLSearchParams();
    if (o.deployment) q.set('deploymentId', o.deployment);
    if (!o.all) q.set('state', 'pending');
    const list = await client().get<Interruption[]>(`/api/interruptions?${q}`);
    out(
      table(
        list.map((i) => ({ ...i, target: i.machineName ?? '', results: i.allowedResults })),
        ['id', 'kind', 'stepName', 'actionName', 'target', 'state', 'results', 'instructions'],
      ),
      list,
    );
  });

program
  .command('submit <interruptionId>')
  .description('answer an interruption')
  .requiredOption('--result <result>', 'proceed|abort (manual intervention), retry|skip|abort (guided failure)')
  .option('--notes <text>', 'recorded with the answer')
  .option('--json')
  .action(async (id, o) => {
    const r = await client().post<Interruption>(`/api/interruptions/${id}/submit`, {
      result: o.result,
      ...(o.notes ? { notes: o.notes } : {}),
    });
    out(`${r.kind} ${whereOf(r)}: ${r.result}`, r);
  });

program
  .command('cancel <deploymentId>')
  .description('cancel a deployment')
  .option('--wait', 'wait until it has stopped')
  .option('--json')
  .action(async (id, o) => {
    const api = client();
    await api.post(`/api/deployments/${id}/cancel`);
    if (!o.wait) return out(`cancelling ${id}`, { id, state: 'cancelling' });
    let d = await api.get<Deployment>(`/api/deployments/${id}`);
    while (!TERMINAL.includes(d.state)) {
      await sleep(500);
      d = await api.get<Deployment>(`/api/deployments/${id}`);
    }
    out(`deployment ${id} ${d.state}`, d);
  });

/**
 * A command that makes a new deployment from an earlier one (retry-failed, rollback): prints the new deployment's id,
 * or with --wait follows it like `deploy --wait` and exits with its outcome.
 */
function derived(name: string, description: string, path: string, says: (d: Deployment, from: string) => string) {
  program
    .command(`${name} <deploymentId>`)
    .description(description)
    .option('--wait', 'follow the new deployment with progress until it ends; the exit code tells how it ended')
    .option('--json')
    .action(async (id, o) => {
      const api = client();
      const dep = await api.post<Deployment>(`/api/deployments/${encodeURIComponent(id)}/${path}`);
      if (!json) process.stderr.write(`${says(dep, id)}: deployment ${dep.id}\n`);
      if (!o.wait) return out(dep.id, dep);
      const d = await follow(api, dep.id);
      out(`deployment ${d.id} ${d.state}`, d);
      process.exitCode = exitFor(d.state);
    });
}

derived(
  'retry-failed',
  'retry a failed deployment: its targets that did not succeed, from the first step that failed, as a new deployment',
  'retry-failed',
  (_d, from) => `retrying what did not succeed in deployment ${from}`,
);

derived(
  'rollback',
  "roll a finished deployment back: the environment's previous successful release, to the machines that got it",
  'rollback',
  (d, from) => `rolling back deployment ${from} to release ${d.releaseVersion}`,
);

/** Pause and resume: the state the server answered; a refusal (an ended deployment) exits 2 with its message. */
async function steer(id: string, what: 'pause' | 'resume') {
  const r = await client().post<SteerAccepted>(`/api/deployments/${encodeURIComponent(id)}/${what}`);
  out(`deployment ${r.id} ${r.state}`, r);
}

program
  .command('pause <deploymentId>')
  .description('pause a deployment: no new target starts, running ones finish')
  .option('--json')
  .action((id) => steer(id, 'pause'));

program
  .command('resume <deploymentId>')
  .description('resume a paused deployment where it stopped')
  .option('--json')
  .action((id) => steer(id, 'resume'));

program
  .command('logs <deploymentId>')
  .description('print a deployment log')
  .option('--follow', 'keep printing until the deployment ends')
  .option('--json', 'one JSON entry per line')
  .action(async (id, o) => {
    const api = client();
    let after = 0;
    for (;;) {
      const page = await api.get<LogPage>(`/api/deployments/${id}/log?afterSeq=${after}&limit=5000`);
      for (const e of page.entries)
        process.stdout.write(
          json ? JSON.stringify(e) + '\n' : `${e.at.slice(11, 23)} ${e.level.padEnd(5)} ${e.text}\n`,
        );
      after = page.nextSeq;
      if (page.entries.length === 5000) continue;
      if (!o.follow) break;
      const d = await api.get<Deployment>(`/api/deployments/${id}`);
      if (TERMINAL.includes(d.state)) {
        const rest = await api.get<LogPage>(`/api/deployments/${id}/log?afterSeq=${after}&limit=5000`);
        if (!rest.entries.length) {
          process.exitCode = exitFor(d.state);
          break;
        }
        continue;
      }
      await sleep(1000);
    }
  });

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) process.exit(e.exitCode === 0 ? 0 : EXIT.usage);
  if (e instanceof ApiError) {
    process.stderr.write(`cuttle: ${e.message}\n`);
    process.exit(EXIT.usage);
  }
  if (e instanceof UsageError) {
    process.stderr.write(`cuttle: ${e.message}\n`);
    process.exit(EXIT.usage);
  }
  process.stderr.write(`cuttle: ${(e as Error).message}\n`);
  process.exit(EXIT.usage);
}
