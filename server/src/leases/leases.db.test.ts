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
import { InterruptionsService } from '../deployments/interruptions.service.js';
import { LiveEvents } from '../live/live-events.js';
import type { MachinesService } from '../machines/machines.js';
import { LeasesService } from './leases.service.js';

let db: TestDatabase;
let repo: DeploymentRepository;
let log: DeploymentLogService;
let leases: LeasesService;
const config = { nodeId: 'test-node', leaseTtlMs: 30_000 } as CuttleConfig;
const AT = () => new Date().toISOString();

beforeAll(async () => {
  db = await openTestDatabase();
  repo = new DeploymentRepository(db.ds);
  const secrets = new DeploymentSecrets(repo);
  const events = new DeploymentEvents();
  log = new DeploymentLogService(repo, secrets, new LiveEvents());
  // Interruptions are not what these tests exercise: machine names (all it asks of MachinesService) are not needed.
  const interruptions = new InterruptionsService(repo, log, events, {} as MachinesService);
  leases = new LeasesService(repo, log, secrets, interruptions, events, config, winston.createLogger({ silent: true }));
}, 60_000);

afterAll(() => db?.close());

/** A deployment of one step over `targets` machines, as DeploymentsService lays one out; returns its target runs. */
async function deployment(targets: number, window: number): Promise<{ id: string; runs: TargetRunRow[] }> {
  const q = (sql: string, params: unknown[] = []) => db.ds.query(sql, params);
  const tag = randomUUID().slice(0, 8);
  const [env] = await q(`INSERT INTO environments (name) VALUES ($1) RETURNING id`, [`env-${tag}`]);
  const [project] = await q(`INSERT INTO projects (name, slug) VALUES ($1, $1) RETURNING id`, [`p-${tag}`]);
  const [channel] = await q(`INSERT INTO channels (project_id, name) VALUES ($1, 'Default') RETURNING id`, [project.id]);
  const process = [{ name: 'Roll', targetRoles: ['web'], actions: [{ name: 'a', type: 'script', script: 'true' }] }];
  const [release] = await q(`INSERT INTO releases (project_id, channel_id, version, process_version, process) VALUES ($1, $2, '1', 1, $3) RETURNING id`, [project.id, channel.id, JSON.stringify(process)]);
  const machines: Array<{ id: string; name: string }> = [];
  for (let i = 0; i < targets; i++) {
    const name = `m-${tag}-${i}`;
    const [m] = await q(`INSERT INTO machines (name, roles, environment_ids, fingerprint, certificate) VALUES ($1, '["web"]', $2, $1, 'x') RETURNING id`, [name, JSON.stringify([env.id])]);
    machines.push({ id: m.id, name });
  }
  const id = await repo.transaction(async (tx) => {
    const dep = await repo.insertDeployment(tx, { releaseId: release.id, projectId: project.id, environmentId: env.id, guidedFailure: false, specific: [], excluded: [], ownerNode: 'test-node', ownershipTtlSeconds: 15 });
    await repo.insertSteps(tx, dep, [{ index: 0, name: 'Roll', state: 'running', window, maxFailures: 0, condition: 'success', startTrigger: 'afterPrevious', skipReason: null }]);
    await repo.insertTargetRuns(tx, dep, 0, 'pending', [{ name: 'a', type: 'script', state: 'pending' }], machines);
    return dep;
  });
  const runs: TargetRunRow[] = await q(`SELECT * FROM target_runs WHERE deployment_id = $1 ORDER BY position`, [id]);
  return { id, runs };
}

/** Takes leases for these target runs as a dispatcher round does: under the deployment's lock. */
function take(id: string, window: number, runs: TargetRunRow[]) {
  return repo.transaction(async (tx) => {
    await repo.lockDeployment(tx, id);
    return leases.take(tx, { deploymentId: id, stepIndex: 0, window, targets: runs.map((r) => ({ targetRunId: r.id, machineId: r.machine_id! })) });
  });
}

const result = (leaseId: string, over: Partial<AgentMessageOf<'lease.result'>> = {}): AgentMessageOf<'lease.result'> => ({
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
const runState = async (id: string) => (await db.ds.query(`SELECT state, error FROM target_runs WHERE id = $1`, [id]))[0];
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
    expect(await leases.complete(ctx, result(lease.id, { lines: [line(1, 'tail')], lastLogSeq: 1 }))).toEqual({ duplicate: false });
    expect(await leases.complete(ctx, result(lease.id, { lines: [line(1, 'tail')], lastLogSeq: 1 }))).toEqual({ duplicate: true });
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
    expect(await runState(runs[0].id)).toEqual({ state: 'failed', error: 'agent lost: the target never accepted the work' });
    expect(await leases.complete(await ctxOf(lease.id), result(lease.id))).toEqual({ duplicate: true });
    expect((await runState(runs[0].id)).state).toBe('failed');
    expect((await db.ds.query(`SELECT count(*)::int AS n FROM leases WHERE deployment_id = $1 AND released_at IS NULL`, [id]))[0].n).toBe(0);
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
      repo.transaction((tx) => leases.take(tx, { deploymentId: id, stepIndex: 0, window: 1, targets: [{ targetRunId: run.id, machineId: run.machine_id! }] }));
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
