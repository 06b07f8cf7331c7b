/**
 * Machine labels against a real database (PGlite in process, or PostgreSQL with DATABASE_URL): what PATCH stores,
 * the `?label=` filter's SQL on jsonb, and the labels `deployable` hands to the layout. Registration (a real CSR, a
 * real agent) is the integration tests' (server/test/labels.test.ts). Each test states the invariant it holds.
 */
import { randomUUID } from 'node:crypto';
import winston from 'winston';
import { openTestDatabase, type TestDatabase } from '../../test/support/database.js';
import type { CuttleConfig } from '../config/config.js';
import { layoutDeployment } from '../deployments/layout.js';
import { EnvironmentEntity } from '../environments/environment.entity.js';
import { EnvironmentsService } from '../environments/environments.service.js';
import { LiveEvents } from '../live/live-events.js';
import type { PkiMaterial } from '../pki/pki.js';
import { MachineEntity } from './machine.entity.js';
import { MachineEvents, MachinesService } from './machines.service.js';
import { RegistrationTokenEntity } from './registration-token.entity.js';

let db: TestDatabase;
let machines: MachinesService;
let env: string;

beforeAll(async () => {
  db = await openTestDatabase();
  machines = new MachinesService(
    db.ds.getRepository(MachineEntity),
    db.ds.getRepository(RegistrationTokenEntity),
    new EnvironmentsService(db.ds.getRepository(EnvironmentEntity)),
    new MachineEvents(),
    new LiveEvents(),
    // Registration (the only user of the PKI) is not exercised here.
    {} as PkiMaterial,
    { heartbeatMs: 10_000 } as CuttleConfig,
    winston.createLogger({ silent: true }),
  );
  env = (await db.ds.query(`INSERT INTO environments (name) VALUES ('L') RETURNING id`))[0].id;
}, 60_000);

afterAll(() => db?.close());

/** A machine in the environment, with these labels (none: the column's default). */
async function machine(name: string, labels?: Record<string, string>): Promise<string> {
  const [row] = await db.ds.query(
    `INSERT INTO machines (name, roles, environment_ids, fingerprint, certificate${labels ? ', labels' : ''})
     VALUES ($1, '["web"]', $2, $3, 'x'${labels ? ', $4' : ''}) RETURNING id`,
    [name, JSON.stringify([env]), randomUUID(), ...(labels ? [JSON.stringify(labels)] : [])],
  );
  return row.id;
}

// A machine registered before labels existed, or without any, has none: an empty map, never null.
it('defaults to no labels', async () => {
  const id = await machine('bare-01');
  expect(machines.toDto(await machines.get(id)).labels).toEqual({});
});

// PATCH replaces the labels whole (a label left out is gone), {} clears them, and a PATCH without labels keeps them.
it('replaces labels whole', async () => {
  const id = await machine('patch-01', { zone: 'a', rack: 'r1' });
  await machines.update(id, { labels: { zone: 'b', tier: 'gold' } });
  expect((await machines.get(id)).labels).toEqual({ zone: 'b', tier: 'gold' });
  await machines.update(id, { disabled: false });
  expect((await machines.get(id)).labels).toEqual({ zone: 'b', tier: 'gold' });
  await machines.update(id, { labels: {} });
  expect((await machines.get(id)).labels).toEqual({});
  // Names that are also Object.prototype's members are stored like any other.
  await machines.update(id, { labels: { toString: 't', valueOf: 'v' } });
  expect((await machines.get(id)).labels).toEqual({ toString: 't', valueOf: 'v' });
});

// `?label=zone=a` keeps exactly the machines whose label zone is "a" (not those with another zone, another label
// valued "a", or none); a malformed selector is refused naming `label`.
it('filters by one label value', async () => {
  await machine('flt-a1', { zone: 'a' });
  await machine('flt-a2', { zone: 'a', rack: 'r1' });
  await machine('flt-b1', { zone: 'b' });
  await machine('flt-x1', { rack: 'a' });
  await machine('flt-none');
  const found = (await machines.list({ label: 'zone=a' })).map((m) => m.name).filter((n) => n.startsWith('flt-'));
  expect(found).toEqual(['flt-a1', 'flt-a2']);
  expect((await machines.list({ label: 'rack=r1' })).map((m) => m.name)).toEqual(['flt-a2']);
  expect(await machines.list({ label: 'zone=nowhere' })).toEqual([]);
  for (const bad of ['zone', 'zone=', 'a b=c', "zone=a' OR 1=1"])
    await expect(machines.list({ label: bad })).rejects.toMatchObject({
      code: 'validation_failed',
      message: expect.stringMatching(/^label must be NAME=VALUE/),
    });
});

// The machines a deployment may use come with their labels, so a step's spreadBy spreads over them; a label named
// like an Object.prototype member (`toString`) is looked up as a label only: a machine without it is unlabelled.
it('hands deployable machines with their labels to the layout', async () => {
  const [{ id: e2 }] = await db.ds.query(`INSERT INTO environments (name) VALUES ('L2') RETURNING id`);
  env = e2;
  const ids = {
    a1: await machine('dep-01', { zone: 'a' }),
    a2: await machine('dep-02', { zone: 'a' }),
    b1: await machine('dep-03', { zone: 'b', toString: 'x' }),
    n1: await machine('dep-04'),
  };
  const ms = await machines.deployable(env, [], []);
  const labelsById: Record<string, Record<string, string>> = Object.fromEntries(ms.map((m) => [m.id, { ...m.labels }]));
  expect(labelsById).toEqual({
    [ids.a1]: { zone: 'a' },
    [ids.a2]: { zone: 'a' },
    [ids.b1]: { zone: 'b', toString: 'x' },
    [ids.n1]: {},
  } as Record<string, Record<string, string>>);
  const step = (spreadBy: string) => ({
    name: 'Roll',
    targetRoles: ['web'],
    spreadBy,
    actions: [{ name: 'a', type: 'script' as const, script: 'true' }],
  });
  const [byZone, byToString] = layoutDeployment([step('zone'), step('toString')], env, 'ch', ms);
  expect(byZone.targets.map((t) => t.name)).toEqual(['dep-01', 'dep-03', 'dep-04', 'dep-02']);
  // dep-03 has the label, the others are unlabelled: a value of their own after it, in name order.
  expect(byToString.targets.map((t) => t.name)).toEqual(['dep-03', 'dep-01', 'dep-02', 'dep-04']);
});
