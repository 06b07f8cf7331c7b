/**
 * Lease accounting against a real database (PGlite in process, or PostgreSQL with DATABASE_URL): the services as the
 * server wires them, the tables as the migrations make them. Each test states the invariant it holds.
 */
import { randomUUID } from 'node:crypto';
import winston from 'winston';
import type { AgentMessageOf, LogLine } from '#shared/protocol/index.js';
import { openTestDatabase, type TestDatabase } from '../../test/support/database.js';
import type { CuttleConfig } from '../config/config.js';
import { DeploymentEvents } from '../deployments/deployment-events.js';
import { DeploymentLogService } from '../deployments/deployment-log.service.js';
import { DeploymentRepository } from '../deployments/deployment.repository.js';
import { DeploymentSecrets } from '../deployments/deployment-secrets.js';
import type { LeaseContext, TargetRunRow } from '../deployments/deployment.types.js';
import { WebhooksService } from '../webhooks/webhooks.service.js';
import { InterruptionsService } from '../deployments/interruptions.service.js';
import { LiveEvents } from '../live/live-events.js';
import { newKey, SecretBox } from '../secrets/secret-box.js';
import type { MachinesService } from '../machines/machines.service.js';
import { LeasesService } from './leases.service.js';

let db: TestDatabase;
let repo: DeploymentRepository;
let log: DeploymentLogService;
let leases: LeasesService;
const config = { nodeId: 'test-node', leaseTtlMs: 30_000 } as CuttleConfig;
const AT = () => new Date().toISOString();

beforeAll(async () => {
  db = await openTestDatabase();
  const box = new SecretBox(newKey());
  repo = new DeploymentRepository(db.ds, box);
  const secrets = new DeploymentSecrets(repo, box);
  const events = new DeploymentEvents();
  log = new DeploymentLogService(repo, secrets, new LiveEvents());
  // Interruptions are not what these tests exercise: machine names (all it asks of MachinesService) are not needed.
  const interruptions = new InterruptionsService(
    repo,
    log,
    events,
    {} as MachinesService,
    new WebhooksService(db.ds, box),
  );
  leases = new LeasesService(repo, log, secrets, interruptions, events, config, winston.createLogger({ silent: true }));
}, 60_000);

afterAll(() => db?.close());

const q = (sql: string, params: unknown[] = []) => db.ds.query(sql, params);

/** Machines of their own (in an environment of their own, unless given one). */
async function machines(
  count: number,
  environmentId?: string,
): Promise<{ env: string; machines: Array<{ id: string; name: string }> }> {
  const tag = randomUUID().slice(0, 8);
  const env =
    environmentId ?? (await q(`INSERT INTO environments (name) VALUES ($1) RETURNING id`, [`env-${tag}`]))[0].id;
  const list: Array<{ id: string; name: string }> = [];
  for (let i = 0; i < count; i++) {
    const name = `m-${tag}-${i}`;
    const [m] = await q(
      `INSERT INTO machines (name, roles, environment_ids, fingerprint, certificate) VALUES ($1, '["web"]', $2, $1, 'x') RETURNING id`,
      [name, JSON.stringify([env])],
    );
    list.push({ id: m.id, name });
  }
  return { env, machines: list };
}

async function project(opts: { concurrent?: boolean } = {}) {
  const tag = randomUUID().slice(0, 8);
  const [p] = await q(
    `INSERT INTO projects (name, slug, allow_concurrent_on_machines) VALUES ($1, $1, $2) RETURNING id`,
    [`p-${tag}`, opts.concurrent ?? false],
  );
  const [channel] = await q(`INSERT INTO channels (project_id, name) VALUES ($1, 'Default') RETURNING id`, [p.id]);
  const process = [{ name: 'Roll', targetRoles: ['web'], actions: [{ name: 'a', type: 'script', script: 'true' }] }];
  const [release] = await q(
    `INSERT INTO releases (project_id, channel_id, version, process_version, process) VALUES ($1, $2, '1', 1, $3) RETURNING id`,
    [p.id, channel.id, JSON.stringify(process)],
  );
  return { projectId: p.id as string, releaseId: release.id as string };
}

/** A deployment of one step over `targets` machines (new ones, or those given), as DeploymentsService lays one out. */
async function deployment(
  targets: number,
  window: number,
  over: {
    on?: { env: string; machines: Array<{ id: string; name: string }> };
    project?: { projectId: string; releaseId: string };
  } = {},
): Promise<{ id: string; runs: TargetRunRow[] }> {
  const { env, machines: list } = over.on ?? (await machines(targets));
  const { projectId, releaseId } = over.project ?? (await project());
  const id = await repo.transaction(async (tx) => {
    const dep = await repo.insertDeployment(tx, {
      releaseId,
      projectId,
      environmentId: env,
      guidedFailure: false,
      specific: [],
      excluded: [],
      ownerNode: 'test-node',
      ownershipTtlSeconds: 15,
    });
    await repo.insertSteps(tx, dep, [
      {
        index: 0,
        name: 'Roll',
        state: 'running',
        window,
        maxFailures: 0,
        condition: 'success',
        startTrigger: 'afterPrevious',
        skipReason: null,
        batchCount: 1,
        policy: {},
      },
    ]);
    await repo.insertTargetRuns(
      tx,
      dep,
      0,
      'pending',
      [{ name: 'a', type: 'script', state: 'pending' }],
      list.map((m) => ({ ...m, batch: 0 })),
    );
    return dep;
  });
  await q(`UPDATE deployments SET state = 'executing' WHERE id = $1`, [id]);
  const runs: TargetRunRow[] = await q(`SELECT * FROM target_runs WHERE deployment_id = $1 ORDER BY position`, [id]);
  return { id, runs };
}

/** Takes leases for these target runs as a dispatcher round does: under the deployment's lock. */
function take(id: string, window: number, runs: TargetRunRow[], exclusive = true, purpose: 'run' | 'check' = 'run') {
  return repo.transaction(async (tx) => {
    await repo.lockDeployment(tx, id);
    const fresh: TargetRunRow[] = await tx.query(`SELECT * FROM target_runs WHERE id = ANY($1::uuid[])`, [
      runs.map((r) => r.id),
    ]);
    const since = new Map(fresh.map((r) => [r.id, r.waiting_since]));
    return leases.take(tx, {
      deploymentId: id,
      stepIndex: 0,
      window,
      exclusive,
      purpose,
      targets: runs.map((r) => ({
        targetRunId: r.id,
        machineId: r.machine_id!,
        waitingSince: since.get(r.id) ?? null,
      })),
    });
  });
}

const result = (
  leaseId: string,
  over: Partial<AgentMessageOf<'lease.result'>> = {},
): AgentMessageOf<'lease.result'> => ({
  type: 'lease.result',
  leaseId,
  state: 'success',
  exitCode: 0,
  actions: [{ index: 0, state: 'success', exitCode: 0 }],
  lastLogSeq: 0,
  at: AT(),
  ...over,
});
const line = (seq: number, text = `line ${seq}`): LogLine => ({ seq, at: AT(), level: 'info', text });
const ctxOf = async (leaseId: string) => (await leases.context(leaseId)) as LeaseContext;
const runState = async (id: string) => (await q(`SELECT state, error FROM target_runs WHERE id = $1`, [id]))[0];
const logTexts = async (id: string) => (await log.read(id, 0, 10_000)).entries.map((e) => e.text);

describe(`lease accounting (${process.env.DATABASE_URL ? 'PostgreSQL' : 'PGlite'})`, () => {
  // The window counts active leases: with window 2, a round for three targets takes two slots (0 and 1) and leaves
  // the third pending; once one is released, the next round takes the freed slot.
  it('takes at most the window, and a released slot again', async () => {
    const { id, runs } = await deployment(3, 2);
    const first = await take(id, 2, runs);
    expect(first.map((l) => l.slot).sort()).toEqual([0, 1]);
    expect((await runState(runs[2].id)).state).toBe('pending');
    expect(await take(id, 2, [runs[2]])).toEqual([]);
    await leases.complete(await ctxOf(first[0].id), result(first[0].id));
    const again = await take(id, 2, [runs[2]]);
    expect(again).toHaveLength(1);
    expect(again[0].slot).toBe(first[0].slot);
  });

  // A result that arrives twice (a resend after a reconnect) settles once: the second is a duplicate, the target and
  // its log are as after the first.
  it('settles a duplicate result once', async () => {
    const { id, runs } = await deployment(1, 1);
    const [lease] = await take(id, 1, runs);
    const ctx = await ctxOf(lease.id);
    expect(await leases.complete(ctx, result(lease.id, { lines: [line(1, 'tail')], lastLogSeq: 1 }))).toEqual({
      duplicate: false,
    });
    expect(await leases.complete(ctx, result(lease.id, { lines: [line(1, 'tail')], lastLogSeq: 1 }))).toEqual({
      duplicate: true,
    });
    expect((await runState(runs[0].id)).state).toBe('success');
    const texts = await logTexts(id);
    expect(texts.filter((t) => t === 'tail')).toHaveLength(1);
    expect(texts.filter((t) => t.includes('succeeded'))).toHaveLength(1);
  });

  // A lease whose agent went silent expires: its target fails as "agent lost" and the slot frees. A result that
  // comes after that (the agent was only cut off) changes nothing: the target stays failed.
  it('ignores a result after its lease expired', async () => {
    const { id, runs } = await deployment(1, 1);
    const [lease] = await take(id, 1, runs);
    await db.ds.query(`UPDATE leases SET expires_at = now() - interval '1 second' WHERE id = $1`, [lease.id]);
    await leases.expire();
    expect(await runState(runs[0].id)).toEqual({
      state: 'failed',
      error: 'agent lost: the target never accepted the work',
    });
    expect(await leases.complete(await ctxOf(lease.id), result(lease.id))).toEqual({ duplicate: true });
    expect((await runState(runs[0].id)).state).toBe('failed');
    expect(
      (
        await db.ds.query(`SELECT count(*)::int AS n FROM leases WHERE deployment_id = $1 AND released_at IS NULL`, [
          id,
        ])
      )[0].n,
    ).toBe(0);
  });

  // Successes of one deployment are settled in batches; one bad result in a batch (here a line whose time the
  // database cannot read) fails alone: the others of its batch are settled, the bad one's target stays in flight.
  it('settles the good results of a batch that holds a bad one', async () => {
    const { id, runs } = await deployment(3, 3);
    const taken = await take(id, 3, runs);
    const byRun = new Map(taken.map((l) => [l.targetRunId, l]));
    const [a, b, c] = runs.map((r) => byRun.get(r.id)!);
    // The first goes alone; the other two arrive while it is written and go together in the next batch.
    const settled = await Promise.allSettled([
      leases.complete(await ctxOf(a.id), result(a.id)),
      leases.complete(await ctxOf(b.id), result(b.id)),
      leases.complete(await ctxOf(c.id), result(c.id, { lines: [{ ...line(1), at: 'not a time' }], lastLogSeq: 1 })),
    ]);
    expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'fulfilled', 'rejected']);
    expect((await runState(runs[0].id)).state).toBe('success');
    expect((await runState(runs[1].id)).state).toBe('success');
    expect((await runState(runs[2].id)).state).toBe('running');
    const active = await db.ds.query(`SELECT id FROM leases WHERE deployment_id = $1 AND released_at IS NULL`, [id]);
    expect(active.map((r: { id: string }) => r.id)).toEqual([c.id]);
  });

  // The window holds in the database itself: two transactions racing for the last free slot (here without the
  // deployment's lock, as a path that forgot it would) end with one lease; the loser's target is not started.
  it('gives the last free slot to one of two concurrent takes', async () => {
    const { id, runs } = await deployment(2, 1);
    const raw = (run: TargetRunRow) =>
      repo.transaction((tx) =>
        leases.take(tx, {
          deploymentId: id,
          stepIndex: 0,
          window: 1,
          exclusive: true,
          targets: [{ targetRunId: run.id, machineId: run.machine_id!, waitingSince: null }],
        }),
      );
    const [x, y] = await Promise.all([raw(runs[0]), raw(runs[1])]);
    expect(x.length + y.length).toBe(1);
    const states = [(await runState(runs[0].id)).state, (await runState(runs[1].id)).state].sort();
    expect(states).toEqual(['pending', 'running']);
    // And under the lock, as the dispatcher takes them: still one.
    const { id: id2, runs: runs2 } = await deployment(2, 1);
    const [p, q] = await Promise.all([take(id2, 1, [runs2[0]]), take(id2, 1, [runs2[1]])]);
    expect(p.length + q.length).toBe(1);
  });

  // An agent's lines are stored once each, in sequence: a chunk that repeats stored lines stores only the new ones,
  // and a chunk after a gap stores nothing until the missing line comes (the acknowledgement says where it stands).
  it('stores log chunks with duplicates and gaps exactly once, in order', async () => {
    const { id, runs } = await deployment(1, 1);
    const [lease] = await take(id, 1, runs);
    const ctx = await ctxOf(lease.id);
    expect(await log.appendAgentLines(ctx, [line(1), line(2), line(3)])).toBe(3);
    expect(await log.appendAgentLines(ctx, [line(2), line(3), line(4)])).toBe(4); // 2 and 3 again: only 4 is new
    expect(await log.appendAgentLines(ctx, [line(6), line(7)])).toBe(4); // 5 is missing: nothing stored
    expect(await log.appendAgentLines(ctx, [line(5), line(6), line(7)])).toBe(7);
    expect(await log.appendAgentLines(ctx, [line(7), line(5)])).toBe(7); // all seen: nothing new
    const agentLines = (await logTexts(id)).filter((t) => t.startsWith('line '));
    expect(agentLines).toEqual(['line 1', 'line 2', 'line 3', 'line 4', 'line 5', 'line 6', 'line 7']);
    const seqs = (await log.read(id, 0, 10_000)).entries.map((e) => e.seq);
    expect(seqs).toEqual(seqs.map((_, i) => i + 1)); // the deployment's log has no gap and no duplicate
  });
});

describe('one deployment at a time per project and environment, one per machine', () => {
  const busyWith = (id: string, runs: TargetRunRow[]) =>
    repo.transaction((tx) =>
      repo.machinesBusy(
        tx,
        id,
        runs.map((r) => ({ id: r.id, machineId: r.machine_id!, waitingSince: r.waiting_since })),
      ),
    );

  // Deployments of a pair queue in creation order: each names the one directly ahead of it, until that one ends.
  it('queues deployments of one project and environment in creation order', async () => {
    const on = await machines(1);
    const p = await project();
    const [a, b, c] = [
      await deployment(1, 1, { on, project: p }),
      await deployment(1, 1, { on, project: p }),
      await deployment(1, 1, { on, project: p }),
    ];
    const row = (id: string) => repo.findDeployment(id).then((d) => d!);
    expect(await repo.queuedBehind(await row(a.id))).toBeUndefined();
    expect(await repo.queuedBehind(await row(b.id))).toBe(a.id);
    expect(await repo.queuedBehind(await row(c.id))).toBe(b.id);
    await q(`UPDATE deployments SET state = 'success' WHERE id = $1`, [a.id]);
    expect(await repo.queuedBehind(await row(b.id))).toBeUndefined();
    // Another project, or another environment, does not queue behind them.
    const other = await deployment(1, 1, { on });
    expect(await repo.queuedBehind(await row(other.id))).toBeUndefined();
  });

  // A machine runs one deployment's work at a time: while X holds a lease on it, Y gets none there (and is told
  // whom it waits for); once X's lease is released, Y gets it.
  it('gives a busy machine to no other deployment until it frees', async () => {
    const on = await machines(1);
    const x = await deployment(1, 1, { on });
    const y = await deployment(1, 1, { on });
    const [held] = await take(x.id, 1, x.runs);
    expect(await busyWith(y.id, y.runs)).toEqual(new Map([[y.runs[0].id, x.id]]));
    expect(await take(y.id, 1, y.runs)).toEqual([]);
    expect((await runState(y.runs[0].id)).state).toBe('pending');
    await leases.complete(await ctxOf(held.id), result(held.id));
    expect(await busyWith(y.id, y.runs)).toEqual(new Map());
    expect(await take(y.id, 1, y.runs)).toHaveLength(1);
  });

  // A project that allows concurrent work on machines neither waits for a busy machine nor holds anyone up.
  it('lets a project that opts out share machines both ways', async () => {
    const on = await machines(1);
    const x = await deployment(1, 1, { on });
    const shared = await deployment(1, 1, { on, project: await project({ concurrent: true }) });
    const z = await deployment(1, 1, { on });
    await take(x.id, 1, x.runs);
    expect(await take(shared.id, 1, shared.runs, false)).toHaveLength(1);
    await q(`UPDATE leases SET released_at = now() WHERE deployment_id = $1`, [x.id]);
    expect(await busyWith(z.id, z.runs)).toEqual(new Map()); // the opted-out lease on the machine does not count
    expect(await take(z.id, 1, z.runs)).toHaveLength(1);
  });

  // The machine's line: a target that began waiting first gets the machine when it frees, before later work of
  // other deployments for it (no starvation); a waiter's own later rounds keep its place.
  it('gives a freed machine to the target that waited longest', async () => {
    const on = await machines(1);
    const [x, y, z] = [await deployment(1, 1, { on }), await deployment(1, 1, { on }), await deployment(1, 1, { on })];
    const [held] = await take(x.id, 1, x.runs);
    await repo.transaction((tx) => repo.markWaitingForMachine(tx, [y.runs[0].id]));
    await q(`UPDATE target_runs SET waiting_since = now() - interval '1 second' WHERE id = $1`, [y.runs[0].id]);
    await leases.complete(await ctxOf(held.id), result(held.id));
    expect(await busyWith(z.id, z.runs)).toEqual(new Map([[z.runs[0].id, y.id]]));
    expect(await take(z.id, 1, z.runs)).toEqual([]);
    const taken = await take(y.id, 1, y.runs);
    expect(taken).toHaveLength(1);
    expect(await q(`SELECT waiting_for, waiting_since FROM target_runs WHERE id = $1`, [y.runs[0].id])).toEqual([
      { waiting_for: null, waiting_since: null },
    ]);
    // A waiter whose deployment ended holds no one up.
    await repo.transaction((tx) => repo.markWaitingForMachine(tx, [z.runs[0].id]));
    await q(`UPDATE deployments SET state = 'cancelled' WHERE id = $1`, [z.id]);
    await leases.complete(await ctxOf(taken[0].id), result(taken[0].id));
    const w = await deployment(1, 1, { on });
    expect(await take(w.id, 1, w.runs)).toHaveLength(1);
  });

  // Two deployments racing for one free machine, each under its own deployment's lock (as two dispatcher rounds, on
  // two nodes, would): the machines' locks let exactly one of them have it.
  it('gives one free machine to one of two concurrent rounds', async () => {
    const on = await machines(1);
    const x = await deployment(1, 1, { on });
    const y = await deployment(1, 1, { on });
    const [a, b] = await Promise.all([take(x.id, 1, x.runs), take(y.id, 1, y.runs)]);
    expect(a.length + b.length).toBe(1);
    expect(
      (
        await q(`SELECT count(*)::int AS n FROM leases WHERE machine_id = $1 AND released_at IS NULL`, [
          on.machines[0].id,
        ])
      )[0].n,
    ).toBe(1);
  });

  // A bake check takes a window slot like a target: with window 1, a check in flight leaves no slot for a target,
  // and the check starts the check (bakeCheck running), not the target again (its state and attempt stay).
  it('counts bake checks in the window, and starts the check only', async () => {
    const { id, runs } = await deployment(2, 1);
    const [lease] = await take(id, 1, [runs[0]]);
    await leases.complete(await ctxOf(lease.id), result(lease.id));
    await repo.transaction((tx) => repo.markChecksDue(tx, [runs[0].id]));
    const [check] = await take(id, 1, [runs[0]], true, 'check');
    expect(check).toBeDefined();
    expect(await q(`SELECT state, attempt, bake_check FROM target_runs WHERE id = $1`, [runs[0].id])).toEqual([
      { state: 'success', attempt: 1, bake_check: 'running' },
    ]);
    expect(await take(id, 1, [runs[1]])).toEqual([]);
    expect((await ctxOf(check.id)).purpose).toBe('check');
  });

  // A failed bake check fails its target (health-check, counted by the planner against the budget); a passed one
  // leaves it succeeded; either way the lease is released and its slot frees.
  it.each([
    ['failed', 'failed', 'failed', 'health-check'],
    ['success', 'success', 'success', null],
  ] as const)('a bake check with the result %s leaves the target %s', async (outcome, state, check, kind) => {
    const { id, runs } = await deployment(1, 1);
    const [lease] = await take(id, 1, runs);
    await leases.complete(await ctxOf(lease.id), result(lease.id));
    await repo.transaction((tx) => repo.markChecksDue(tx, [runs[0].id]));
    const [c] = await take(id, 1, runs, true, 'check');
    await leases.complete(
      await ctxOf(c.id),
      result(c.id, {
        state: outcome,
        exitCode: outcome === 'success' ? 0 : 1,
        error: outcome === 'failed' ? 'exit 1' : undefined,
      }),
    );
    expect(await q(`SELECT state, bake_check, failure_kind FROM target_runs WHERE id = $1`, [runs[0].id])).toEqual([
      { state, bake_check: check, failure_kind: kind },
    ]);
    expect((await q(`SELECT released_at IS NOT NULL AS released FROM leases WHERE id = $1`, [c.id]))[0].released).toBe(
      true,
    );
    const texts = await logTexts(id);
    expect(texts.some((t) => t.includes(outcome === 'success' ? 'health check passed' : 'health check failed'))).toBe(
      true,
    );
  });
});
