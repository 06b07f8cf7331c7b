/**
 * Webhook deliveries against a real database (PGlite in process, or PostgreSQL with DATABASE_URL): two nodes' senders
 * sharing one table post each delivery once; a delivery no receiver accepted within 24 h is given up; a disabled
 * webhook's deliveries wait. The end-to-end behaviour (events from deployments, restarts) is server/test/notifications.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import winston from 'winston';
import { openTestDatabase, type TestDatabase } from '../../test/support/database.js';
import type { CuttleConfig } from '../config/config.js';
import { newKey, SecretBox } from '../secrets/secret-box.js';
import { WebhookSender } from './webhook-sender.js';
import { WebhooksService } from './webhooks.service.js';

let db: TestDatabase;
let box: SecretBox;
let hooks: WebhooksService;
let receiver: Server;
let url: string;
const received: Array<{ delivery: string; path: string }> = [];
const config = { webhookRetryBaseMs: 50, version: 'test' } as CuttleConfig;
const sender = () => new WebhookSender(db.ds, box, config, winston.createLogger({ silent: true }));

beforeAll(async () => {
  db = await openTestDatabase();
  box = new SecretBox(newKey());
  hooks = new WebhooksService(db.ds, box);
  receiver = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      received.push({ delivery: String(req.headers['x-cuttle-delivery']), path: req.url ?? '' });
      // Small delay: both senders' rounds overlap while posting.
      setTimeout(() => {
        res.statusCode = req.url === '/refuse' ? 500 : 200;
        res.end();
      }, 20);
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', () => r()));
  url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
}, 60_000);

afterAll(async () => {
  await new Promise<void>((r) => receiver?.close(() => r()));
  await db?.close();
});

/** `n` pending deliveries of a webhook, created `ageMs` ago. */
async function enqueue(webhookId: string, n: number, ageMs = 0): Promise<string[]> {
  const rows: Array<{ id: string }> = await db.ds.query(
    `INSERT INTO webhook_deliveries (webhook_id, event, payload, created_at)
     SELECT $1, 'deployment.succeeded', jsonb_build_object('n', g), now() - ($3::int * interval '1 millisecond')
     FROM generate_series(1, $2) g RETURNING id`,
    [webhookId, n, ageMs],
  );
  return rows.map((r) => r.id);
}

const statuses = async (ids: string[]): Promise<string[]> =>
  (
    await db.ds.query(`SELECT status, attempts, last_status_code FROM webhook_deliveries WHERE id = ANY($1::uuid[])`, [
      ids,
    ])
  ).map((r: { status: string }) => r.status);

// Two nodes' senders claim with SKIP LOCKED: every delivery reaches the receiver exactly once.
it('posts each delivery once with two senders on one database', async () => {
  const hook = await hooks.create({ url: `${url}/ok`, events: ['deployment.succeeded'], secret: 'whsec-db-test' });
  const ids = await enqueue(hook.id, 30);
  const [a, b] = [sender(), sender()];
  for (let i = 0; i < 10 && (await statuses(ids)).some((s) => s !== 'delivered'); i++)
    await Promise.all([a.round(), b.round()]);
  expect(await statuses(ids)).toEqual(ids.map(() => 'delivered'));
  const mine = received.filter((r) => ids.includes(r.delivery)).map((r) => r.delivery);
  expect(mine.sort()).toEqual([...ids].sort());
}, 60_000);

// A delivery whose 24 h ran out with no 2xx is given up (expired) and not tried again.
it('expires a delivery no receiver accepted within 24 h', async () => {
  const hook = await hooks.create({ url: `${url}/refuse`, events: ['deployment.failed'], secret: 'whsec-db-test' });
  const [id] = await enqueue(hook.id, 1, 24 * 3600_000 - 10);
  await sender().round();
  const [row] = await db.ds.query(`SELECT status, attempts, last_status_code FROM webhook_deliveries WHERE id = $1`, [
    id,
  ]);
  expect(row).toMatchObject({ status: 'expired', attempts: 1, last_status_code: 500 });
  const before = received.length;
  await sender().round();
  expect(received.length).toBe(before);
}, 60_000);

// A disabled webhook's deliveries wait; enabled again, they go out.
it('holds the deliveries of a disabled webhook until it is enabled', async () => {
  const hook = await hooks.create({ url: `${url}/ok`, events: ['deployment.succeeded'], secret: 'whsec-db-test' });
  await hooks.update(hook.id, { disabled: true });
  const ids = await enqueue(hook.id, 2);
  await sender().round();
  expect(await statuses(ids)).toEqual(['pending', 'pending']);
  await hooks.update(hook.id, { disabled: false });
  await sender().round();
  expect(await statuses(ids)).toEqual(['delivered', 'delivered']);
}, 60_000);

// The secret is stored encrypted, never as given.
it('stores the secret encrypted', async () => {
  const hook = await hooks.create({
    url: `${url}/ok`,
    events: ['deployment.succeeded'],
    secret: 'whsec-plain-visible',
  });
  const [row] = await db.ds.query(`SELECT secret FROM webhooks WHERE id = $1`, [hook.id]);
  expect(row.secret).not.toContain('whsec-plain-visible');
  expect(box.decrypt(row.secret)).toBe('whsec-plain-visible');
});
