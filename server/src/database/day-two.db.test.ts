/**
 * The day-two migration against a real database (PGlite in process, or PostgreSQL with DATABASE_URL): it goes down
 * and up again cleanly, and a deployment still scheduled when it goes down ends cancelled with the reason (the older
 * schema has no `scheduled` state to keep it in).
 */
import { openTestDatabase, type TestDatabase } from '../../test/support/database.js';

let db: TestDatabase;

beforeAll(async () => {
  db = await openTestDatabase();
}, 60_000);

afterAll(() => db?.close());

const q = (sql: string, params: unknown[] = []) => db.ds.query(sql, params);
const applied = async () => (await q(`SELECT 1 FROM migrations WHERE name = 'DayTwo1764136800000'`)).length > 0;

it('goes down and up, cancelling what is still scheduled', async () => {
  const [env] = await q(`INSERT INTO environments (name) VALUES ('Live') RETURNING id`);
  const [p] = await q(
    `INSERT INTO projects (name, slug, auto_deploy_new_machines) VALUES ('p', 'p', true) RETURNING id`,
  );
  const [c] = await q(`INSERT INTO channels (project_id, name) VALUES ($1, 'Default') RETURNING id`, [p.id]);
  const [r] = await q(
    `INSERT INTO releases (project_id, channel_id, version, process_version, process) VALUES ($1, $2, '1', 1, '[]') RETURNING id`,
    [p.id, c.id],
  );
  const [d] = await q(
    `INSERT INTO deployments (release_id, project_id, environment_id, state, queue_at) VALUES ($1, $2, $3, 'scheduled', now() + interval '1 day') RETURNING id`,
    [r.id, p.id, env.id],
  );
  while (await applied()) await db.ds.undoLastMigration({ transaction: 'each' });
  const [down] = await q(`SELECT state, error, finished_at FROM deployments WHERE id = $1`, [d.id]);
  expect(down).toMatchObject({
    state: 'cancelled',
    error: expect.stringMatching(/scheduled deployments were removed/),
  });
  expect(down.finished_at).toBeInstanceOf(Date);
  await db.ds.runMigrations({ transaction: 'each' });
  expect(await applied()).toBe(true);
  const [project] = await q(`SELECT auto_deploy_new_machines FROM projects WHERE id = $1`, [p.id]);
  expect(project.auto_deploy_new_machines).toBe(false);
  const [up] = await q(`SELECT queue_at, trigger, trigger_machine_id FROM deployments WHERE id = $1`, [d.id]);
  expect(up).toEqual({ queue_at: null, trigger: null, trigger_machine_id: null });
});
