/**
 * Server retention against a real database (PGlite in process, or PostgreSQL with DATABASE_URL): old deployments are
 * made by moving their timestamps back, as the sweep sees them after months of use. Each test states its invariant.
 */
import { randomUUID } from 'node:crypto';
import winston from 'winston';
import { openTestDatabase, type TestDatabase } from '../../test/support/database.js';
import { AuditEventEntity } from '../audit/audit-event.entity.js';
import { AuditService } from '../audit/audit.service.js';
import { DeploymentRepository } from '../deployments/deployment.repository.js';
import { newKey, SecretBox } from '../secrets/secret-box.js';
import { RetentionService } from './retention.service.js';

let db: TestDatabase;
let repo: DeploymentRepository;
let retention: RetentionService;
const DAY = 86_400_000;

beforeAll(async () => {
  db = await openTestDatabase();
  repo = new DeploymentRepository(db.ds, new SecretBox(newKey()));
  retention = new RetentionService(
    repo,
    new AuditService(db.ds.getRepository(AuditEventEntity)),
    { retentionDays: 90, retentionIntervalMs: 3_600_000 },
    winston.createLogger({ silent: true }),
  );
}, 60_000);

afterAll(() => db?.close());

const q = (sql: string, params: unknown[] = []) => db.ds.query(sql, params);

/** A project with one release, and an environment of its own. */
async function setup() {
  const tag = randomUUID().slice(0, 8);
  const [env] = await q(`INSERT INTO environments (name) VALUES ($1) RETURNING id`, [`env-${tag}`]);
  const [p] = await q(`INSERT INTO projects (name, slug) VALUES ($1, $1) RETURNING id`, [`p-${tag}`]);
  const [channel] = await q(`INSERT INTO channels (project_id, name) VALUES ($1, 'Default') RETURNING id`, [p.id]);
  const [release] = await q(
    `INSERT INTO releases (project_id, channel_id, version, process_version, process) VALUES ($1, $2, '1', 1, '[]') RETURNING id`,
    [p.id, channel.id],
  );
  return { env: env.id as string, project: p.id as string, release: release.id as string };
}

/** A deployment in `state`, created and finished `daysAgo` days ago, with `lines` log lines and a step. */
async function deployment(
  s: { env: string; project: string; release: string },
  state: string,
  daysAgo: number,
  lines = 3,
): Promise<string> {
  const at = new Date(Date.now() - daysAgo * DAY);
  const finished = ['success', 'failed', 'cancelled'].includes(state) ? at : null;
  const [d] = await q(
    `INSERT INTO deployments (release_id, project_id, environment_id, state, created_at, started_at, finished_at)
     VALUES ($1, $2, $3, $4, $5, $5, $6) RETURNING id`,
    [s.release, s.project, s.env, state, at, finished],
  );
  await q(
    `INSERT INTO deployment_steps (deployment_id, step_index, name, state, window_size, max_failures, condition, start_trigger)
     VALUES ($1, 0, 'Roll', 'success', 1, 0, 'success', 'afterPrevious')`,
    [d.id],
  );
  await repo.transaction((tx) =>
    repo.appendLog(
      tx,
      d.id,
      Array.from({ length: lines }, (_, i) => ({ level: 'info' as const, text: `line ${i}` })),
    ),
  );
  return d.id;
}

const exists = async (id: string) => (await q(`SELECT 1 FROM deployments WHERE id = $1`, [id])).length === 1;
const logCount = async (ids: string[]) =>
  Number((await q(`SELECT count(*) AS n FROM deployment_log WHERE deployment_id = ANY($1::uuid[])`, [ids]))[0].n);

// Deployments finished more than 90 days ago are deleted with their log lines and steps, in batches smaller than the
// backlog; kept whatever their age: per project and environment the newest finished deployment and the newest
// successful one, and every unfinished one. The sweep reports what it removed; run again, it removes nothing.
it('deletes old deployments and their logs, keeping each environment latest per project', async () => {
  const a = await setup();
  const b = { ...(await setup()) };
  const oldSuccessA = await deployment(a, 'success', 200); // older success: goes
  const lastSuccessA = await deployment(a, 'success', 150); // newest success of A: kept (rollbacks, triggers)
  const oldFailedA = await deployment(a, 'failed', 120); // goes
  const olderA = await deployment(a, 'failed', 100); // goes: a younger one is A's newest finished
  const recentA = await deployment(a, 'cancelled', 10); // younger than 90 days, and A's newest finished: kept
  const junkA = await Promise.all([1, 2, 3, 4, 5].map((i) => deployment(a, 'cancelled', 130 + i, 2))); // all go
  const queuedOldA = await deployment(a, 'queued', 300); // unfinished: never touched
  const onlyB = await deployment(b, 'failed', 400); // B's only (newest) deployment: kept
  // Same project, another environment: its own newest is kept.
  const c = {
    ...a,
    env: (await q(`INSERT INTO environments (name) VALUES ($1) RETURNING id`, [`env-${randomUUID()}`]))[0].id,
  };
  const oldC = await deployment(c, 'cancelled', 300);
  const newestC = await deployment(c, 'failed', 200);
  await q(
    `INSERT INTO audit_events (at, actor, action, resource_type, resource_id, outcome, status, summary)
     VALUES ($1, 'old', 'project.update', 'project', 'x', 'ok', 200, 'old'), (now(), 'new', 'project.update', 'project', 'x', 'ok', 200, 'new')`,
    [new Date(Date.now() - 91 * DAY)],
  );
  const gone = [oldSuccessA, oldFailedA, olderA, ...junkA, oldC];
  const kept = [lastSuccessA, recentA, queuedOldA, onlyB, newestC];

  const r = await retention.sweep(Date.now(), 3);
  expect(r).toEqual({ deployments: gone.length, logLines: 4 * 3 + 5 * 2, auditEvents: 1, skipped: false });
  for (const id of gone) expect([id, await exists(id)]).toEqual([id, false]);
  for (const id of kept) expect([id, await exists(id)]).toEqual([id, true]);
  expect(await logCount(gone)).toBe(0);
  expect(await logCount(kept)).toBe(3 * kept.length);
  expect(
    Number((await q(`SELECT count(*) AS n FROM deployment_steps WHERE deployment_id = ANY($1::uuid[])`, [gone]))[0].n),
  ).toBe(0);
  expect((await q(`SELECT actor FROM audit_events`)).map((e: { actor: string }) => e.actor)).toEqual(['new']);

  expect(await retention.sweep(Date.now(), 3)).toEqual({ deployments: 0, logLines: 0, auditEvents: 0, skipped: false });
});

// A deployment that an unfinished one rolls back is kept, however old, until that one ends.
it('keeps a deployment an unfinished one refers to', async () => {
  const s = await setup();
  const failed = await deployment(s, 'failed', 200);
  await deployment(s, 'success', 150);
  const rollback = await deployment(s, 'executing', 1);
  await q(`UPDATE deployments SET rollback_of = $1 WHERE id = $2`, [failed, rollback]);
  await deployment(s, 'failed', 100);
  await retention.sweep(Date.now(), 10);
  expect(await exists(failed)).toBe(true);
  await q(`UPDATE deployments SET state = 'failed', finished_at = now() WHERE id = $1`, [rollback]);
  await retention.sweep(Date.now(), 10);
  expect(await exists(failed)).toBe(false);
  expect(await exists(rollback)).toBe(true);
});

// Two nodes sweeping at once: one does the deployments, the other finds it busy and leaves them (no double work, no
// deadlock); together they delete each old deployment once.
it('sweeps on one node at a time', async () => {
  const s = await setup();
  for (let i = 0; i < 6; i++) await deployment(s, 'failed', 200 + i, 1);
  await deployment(s, 'failed', 1);
  const results = await Promise.all([retention.sweep(Date.now(), 2), retention.sweep(Date.now(), 2)]);
  expect(results.reduce((n, r) => n + r.deployments, 0)).toBe(6);
  expect(Number((await q(`SELECT count(*) AS n FROM deployments WHERE project_id = $1`, [s.project]))[0].n)).toBe(1);
});
