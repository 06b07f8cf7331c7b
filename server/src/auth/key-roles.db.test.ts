/**
 * The key-roles migration and ApiKeysService against a real database (PGlite in process, or PostgreSQL with
 * DATABASE_URL): keys that existed before roles keep doing everything, and keys are stored with role and scope.
 */
import { openTestDatabase, type TestDatabase } from '../../test/support/database.js';
import type { CuttleConfig } from '../config/config.js';
import { ApiKeyEntity } from './api-key.entity.js';
import { ApiKeysService, hashKey } from './api-keys.service.js';
import { ScopeResolver } from './scope.js';

let db: TestDatabase;
let keys: ApiKeysService;

beforeAll(async () => {
  db = await openTestDatabase();
  keys = new ApiKeysService(db.ds.getRepository(ApiKeyEntity), {} as CuttleConfig, new ScopeResolver(db.ds));
}, 60_000);

afterAll(() => db?.close());

const applied = async () =>
  (await db.ds.query(`SELECT 1 FROM migrations WHERE name = 'KeyRoles1764118800000'`)).length > 0;

// Invariant: a key made before keys had roles is an unscoped admin after the migration (it could do everything), and
// deployments made before have no creator; the migration also goes down and up again cleanly.
it('makes existing keys admins, everywhere', async () => {
  while (await applied()) await db.ds.undoLastMigration({ transaction: 'each' });
  await db.ds.query(`INSERT INTO api_keys (name, key_hash) VALUES ('old-ci', $1)`, [hashKey('ck_old')]);
  await db.ds.runMigrations({ transaction: 'each' });
  expect(await keys.verify('ck_old')).toMatchObject({
    name: 'old-ci',
    role: 'admin',
    environmentIds: null,
    projectIds: null,
  });
});

// Invariant: a key is stored with its role and its scope as ids (given by name), and verify returns both.
it('stores role and scope', async () => {
  const [env] = await db.ds.query(`INSERT INTO environments (name) VALUES ('Test') RETURNING id`);
  const made = await keys.create({ name: 'ci', role: 'deployer', environmentIds: ['Test'] });
  expect(made).toMatchObject({ role: 'deployer', environmentIds: [env.id], projectIds: null });
  expect(await keys.verify(made.key)).toEqual({
    id: made.id,
    name: 'ci',
    role: 'deployer',
    environmentIds: [env.id],
    projectIds: null,
  });
});
