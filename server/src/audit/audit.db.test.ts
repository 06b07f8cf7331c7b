/**
 * The audit log's storage against a real database (PGlite in process, or PostgreSQL with DATABASE_URL): the
 * retention hook deleting by age in batches, and the filters' SQL. What is recorded for which request is the
 * integration tests' (server/test/audit.test.ts).
 */
import { openTestDatabase, type TestDatabase } from '../../test/support/database.js';
import { AuditEventEntity } from './audit-event.entity.js';
import { AuditService } from './audit.service.js';

let db: TestDatabase;
let audit: AuditService;

beforeAll(async () => {
  db = await openTestDatabase();
  audit = new AuditService(db.ds.getRepository(AuditEventEntity));
}, 60_000);

afterAll(() => db?.close());

const DAY = 86_400_000;

/** `n` events `daysAgo` days old, by `actor`. */
async function seed(n: number, daysAgo: number, actor: string) {
  await db.ds.query(
    `INSERT INTO audit_events (at, actor, action, resource_type, resource_id, outcome, status, summary)
     SELECT $1, $2, 'project.update', 'project', 'p-' || g, 'ok', 200, 'seeded' FROM generate_series(1, $3) g`,
    [new Date(Date.now() - daysAgo * DAY), actor, n],
  );
}

// Deleting older than a date removes exactly the events before it, in batches smaller than the backlog, and keeps
// every newer one; run again it finds nothing more.
it('deletes events older than a date, in batches', async () => {
  await seed(25, 100, 'old');
  await seed(5, 1, 'new');
  expect(await audit.deleteOlderThan(new Date(Date.now() - 90 * DAY), 7)).toBe(25);
  expect(await audit.deleteOlderThan(new Date(Date.now() - 90 * DAY), 7)).toBe(0);
  const left = await audit.list({ limit: 1000 });
  expect(left.map((e) => e.actor)).toEqual(Array(5).fill('new'));
});

// Filters combine; ids are strings, newest first; `before` continues a page.
it('filters and pages', async () => {
  await audit.append({
    actor: 'bob',
    actorKeyId: null,
    action: 'deployment.create',
    resourceType: 'deployment',
    resourceId: 'd-1',
    outcome: 'ok',
    status: 201,
    summary: 'release 1.0.0 to "Prod"',
  });
  const [bob] = await audit.list({ actor: 'bob', limit: 10 });
  expect(bob).toMatchObject({ actor: 'bob', resourceId: 'd-1', outcome: 'ok', status: 201, actorKeyId: null });
  expect(typeof bob.id).toBe('string');
  expect(await audit.list({ resourceType: 'deployment', resourceId: 'd-2', limit: 10 })).toEqual([]);
  expect(await audit.list({ outcome: 'denied', limit: 10 })).toEqual([]);
  const page1 = await audit.list({ limit: 3 });
  const page2 = await audit.list({ limit: 3, before: Number(page1[2].id) });
  expect(page1[0].id).toBe(bob.id);
  expect(Number(page2[0].id)).toBeLessThan(Number(page1[2].id));
  expect(await audit.list({ since: new Date(Date.now() + DAY), limit: 10 })).toEqual([]);
});
