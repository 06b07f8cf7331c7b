/**
 * Notifications as a user sees them: an email action sent by the server through a real SMTP server (running in this
 * test process) with its text substituted, and its failure with the SMTP answer in the log; webhooks as a receiver
 * sees them: signed JSON POSTs retried until one is accepted, and a delivery that waits in the database while the
 * receiver is down, across a server restart.
 */
import { createHmac } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { SMTPServer } from 'smtp-server';
import {
  createProject,
  freePort,
  startDeployment,
  startServer,
  stopAll,
  waitFor,
  waitInterruptions,
  type TestServer,
} from './support/fixtures.js';

interface Mail {
  from: string;
  to: string[];
  raw: string;
}

const mails: Mail[] = [];
let smtp: SMTPServer;
let smtpPort: number;
let srv: TestServer;
let env: string;

/** Refused by the SMTP server at RCPT TO, as a mail server refuses an unknown mailbox. */
const REFUSED = 'nobody@refused.example';

function startSmtp(port: number): Promise<SMTPServer> {
  const s = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    onRcptTo(address, _session, cb) {
      if (address.address === REFUSED)
        return cb(Object.assign(new Error('5.1.1 mailbox unavailable'), { responseCode: 550 }));
      cb();
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        mails.push({
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          to: session.envelope.rcptTo.map((r) => r.address),
          raw: Buffer.concat(chunks).toString('utf8'),
        });
        cb();
      });
    },
  });
  return new Promise((res, rej) => {
    s.once('error', rej);
    s.listen(port, '127.0.0.1', () => res(s));
  });
}

interface Received {
  headers: IncomingHttpHeaders;
  body: string;
}

/** A webhook receiver answering each POST with the next status of `statuses` (the last one repeats). */
function startReceiver(port: number, statuses: number[], got: Received[]): Promise<Server> {
  const s = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      got.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      res.statusCode = statuses[Math.min(got.length - 1, statuses.length - 1)];
      res.end();
    });
  });
  return new Promise((res) => s.listen(port, '127.0.0.1', () => res(s)));
}

const closeServer = (s: Server) => new Promise<void>((res) => s.close(() => res()));
const hmac = (secret: string, body: string) => `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;

const emailStep = (to: string[], extra: Record<string, unknown> = {}) => ({
  name: 'Notify',
  actions: [
    {
      name: 'Tell ops',
      type: 'email',
      to,
      subject: 'Deployed #{Cuttle.Project.Name} #{Cuttle.Release.Number} to #{Cuttle.Environment.Name}',
      body: 'Hello #{Greeting}, the token is #{Token}.',
      ...extra,
    },
  ],
});

async function emailProject(name: string, to: string[]) {
  const p = await createProject(srv, name, [emailStep(to)]);
  await srv.must('PUT', `/api/projects/${p.id}/variables`, {
    variables: [
      { name: 'Greeting', value: 'operators' },
      { name: 'Recipient', value: 'dev@example.com' },
      { name: 'Token', value: 'tok-8f3a9c2e71', sensitive: true },
    ],
  });
  return p;
}

beforeAll(async () => {
  smtpPort = await freePort();
  smtp = await startSmtp(smtpPort);
  srv = await startServer({
    env: { CUTTLE_SMTP_URL: `smtp://127.0.0.1:${smtpPort}`, CUTTLE_WEBHOOK_RETRY_BASE_MS: '200' },
  });
  env = (await srv.must('POST', '/api/environments', { name: 'Production' })).id;
}, 120_000);

afterAll(async () => {
  await srv?.stop();
  await stopAll();
  await new Promise<void>((res) => (smtp ? smtp.close(() => res()) : res()));
});

describe('email action', () => {
  // The recipients get one email whose subject and body have the variables substituted (a sensitive one too: the
  // author put it there), and the log says where it went and what the SMTP server answered, never the sensitive value.
  it('sends a substituted email through CUTTLE_SMTP_URL', async () => {
    const p = await emailProject('Mailer', ['ops@example.com', '#{Recipient}']);
    const dep = await startDeployment(srv, p.id, env, { version: '2.4.1' });
    const done = await srv.waitDeployment(dep.id);
    const log = (await srv.readLog(dep.id)).map((e) => e.text as string);
    expect({ state: done.state, log }).toMatchObject({ state: 'success' });
    const mail = mails.find((m) => m.raw.includes('2.4.1'))!;
    expect(mail.to).toEqual(['ops@example.com', 'dev@example.com']);
    expect(mail.raw).toMatch(/Subject: Deployed Mailer 2\.4\.1 to Production/);
    expect(mail.raw).toContain('Hello operators, the token is tok-8f3a9c2e71.');
    expect(log).toContain(
      'Sending email to ops@example.com, dev@example.com (subject Deployed Mailer 2.4.1 to Production)',
    );
    expect(log.some((l) => /^Email sent to 2 recipient\(s\); the SMTP server answered: 250/.test(l))).toBe(true);
    expect(log.join('\n')).not.toContain('tok-8f3a9c2e71');
  }, 60_000);

  // A refusal by the SMTP server is the action's failure: the deployment fails and the log has the server's answer.
  it('fails the action with the SMTP answer when the server refuses', async () => {
    const p = await emailProject('Mailer refused', [REFUSED]);
    const dep = await startDeployment(srv, p.id, env);
    const done = await srv.waitDeployment(dep.id);
    const log = (await srv.readLog(dep.id)).map((e) => e.text as string);
    expect(done.state).toBe('failed');
    expect(log.some((l) => l.startsWith('Email Tell ops failed:') && l.includes('550'))).toBe(true);
  }, 60_000);

  // A bad email action is refused when the process is saved, naming the field.
  it('refuses invalid email actions with 400 naming the field', async () => {
    const p = await srv.must('POST', '/api/projects', { name: 'Mailer invalid' });
    const { version } = await srv.must('GET', `/api/projects/${p.id}/deployment-process`);
    const put = (steps: unknown[]) =>
      srv.request('PUT', `/api/projects/${p.id}/deployment-process`, { version, steps });
    const cases: Array<[unknown[], string]> = [
      [[emailStep(['not-an-address'])], 'steps[0].actions[0].to[0] must be email addresses'],
      [
        [emailStep(['a@example.com'], { subject: 's'.repeat(1001) })],
        'steps[0].actions[0].subject must be at most 1000',
      ],
      [
        [emailStep(['a@example.com'], { body: 'b'.repeat(100_001) })],
        'steps[0].actions[0].body must be at most 100,000',
      ],
      [
        [{ ...emailStep(['a@example.com']), targetRoles: ['web'] }],
        'steps[0].actions[0].type email is sent by the server',
      ],
    ];
    for (const [steps, message] of cases) {
      const r = await put(steps);
      expect({ status: r.status, message: JSON.stringify(r.body.message) }).toMatchObject({ status: 400 });
      expect(JSON.stringify(r.body.message)).toContain(message);
    }
  }, 60_000);
});

describe('webhooks', () => {
  // A receiver that refuses the first two deliveries gets the third; it carries the event, the delivery id and a
  // signature that verifies with the secret; the delivery log shows three attempts, the last one delivered.
  it('retries until the receiver accepts, each POST signed', async () => {
    const got: Received[] = [];
    const port = await freePort();
    const receiver = await startReceiver(port, [500, 500, 200], got);
    try {
      const secret = 'whsec-retry-0123456789';
      const hook = await srv.must('POST', '/api/webhooks', {
        url: `http://127.0.0.1:${port}/hook`,
        events: ['deployment.succeeded'],
        secret,
      });
      expect(hook).toMatchObject({ events: ['deployment.succeeded'], disabled: false });
      expect(JSON.stringify(hook)).not.toContain(secret);
      const p = await emailProject('Hooked', ['ops@example.com']);
      const dep = await startDeployment(srv, p.id, env);
      expect((await srv.waitDeployment(dep.id)).state).toBe('success');
      await waitFor('three POSTs', async () => got.length >= 3 || null, 30_000, 100);
      const third = got[2];
      expect(third.headers['x-cuttle-signature']).toBe(hmac(secret, third.body));
      expect(third.headers['x-cuttle-event']).toBe('deployment.succeeded');
      const body = JSON.parse(third.body);
      expect(body).toMatchObject({
        id: third.headers['x-cuttle-delivery'],
        event: 'deployment.succeeded',
        data: { deploymentId: dep.id, projectName: 'Hooked', environmentName: 'Production', state: 'success' },
      });
      // The same delivery each time (one id), not three events.
      expect(new Set(got.map((g) => g.headers['x-cuttle-delivery'])).size).toBe(1);
      const deliveries = await waitFor(
        'the delivery to be delivered',
        async () => {
          const list = await srv.must('GET', `/api/webhooks/${hook.id}/deliveries`);
          return list[0]?.status === 'delivered' ? list : null;
        },
        10_000,
        100,
      );
      expect(deliveries).toHaveLength(1);
      expect(deliveries[0]).toMatchObject({ event: 'deployment.succeeded', attempts: 3, lastStatusCode: 200 });
      await srv.must('DELETE', `/api/webhooks/${hook.id}`);
    } finally {
      await closeServer(receiver);
    }
  }, 90_000);

  // A person is asked (interruption.opened reaches the receiver with the instructions); the email after the manual
  // intervention goes out only once it is answered proceed.
  it('reports an interruption, and sends the email after the manual intervention', async () => {
    const got: Received[] = [];
    const port = await freePort();
    const receiver = await startReceiver(port, [200], got);
    try {
      const hook = await srv.must('POST', '/api/webhooks', {
        url: `http://127.0.0.1:${port}/`,
        events: ['interruption.opened'],
        secret: 'whsec-interrupt-0123456789',
      });
      const step = emailStep(['release@example.com'], { subject: 'Approved #{Cuttle.Release.Number}' });
      const p = await createProject(srv, 'Approve then mail', [
        {
          ...step,
          actions: [{ name: 'Check', type: 'manual-intervention', instructions: 'Look at staging' }, ...step.actions],
        },
      ]);
      const dep = await startDeployment(srv, p.id, env, { version: '7.7.7' });
      const [intr] = await waitInterruptions(srv, dep.id);
      await waitFor('interruption.opened', async () => got.length >= 1 || null, 20_000, 100);
      expect(JSON.parse(got[0].body)).toMatchObject({
        event: 'interruption.opened',
        data: {
          deploymentId: dep.id,
          interruptionId: intr.id,
          kind: 'manual-intervention',
          instructions: 'Look at staging',
        },
      });
      expect(mails.some((m) => m.raw.includes('Approved 7.7.7'))).toBe(false);
      await srv.must('POST', `/api/interruptions/${intr.id}/submit`, { result: 'proceed' });
      expect((await srv.waitDeployment(dep.id)).state).toBe('success');
      expect(mails.filter((m) => m.raw.includes('Approved 7.7.7'))).toHaveLength(1);
      await srv.must('DELETE', `/api/webhooks/${hook.id}`);
    } finally {
      await closeServer(receiver);
    }
  }, 90_000);

  // Webhook input is checked: http(s) URLs and known events only, named in the message.
  it('refuses a bad URL or event with 400 naming the field', async () => {
    const bad = await srv.request('POST', '/api/webhooks', {
      url: 'file:///etc/passwd',
      events: ['deployment.failed'],
      secret: 'whsec-0123456789',
    });
    expect(bad.status).toBe(400);
    expect(JSON.stringify(bad.body.message)).toContain('url');
    const event = await srv.request('POST', '/api/webhooks', {
      url: 'https://example.com/',
      events: ['deployment.exploded'],
      secret: 'whsec-0123456789',
    });
    expect(event.status).toBe(400);
    expect(JSON.stringify(event.body.message)).toContain('events');
  }, 30_000);

  // A receiver that is down loses nothing: the delivery waits in the database, survives the server's restart, and
  // reaches the receiver once it is back.
  it('delivers to a receiver that was down across a server restart', async () => {
    const got: Received[] = [];
    const port = await freePort();
    const secret = 'whsec-restart-0123456789';
    const hook = await srv.must('POST', '/api/webhooks', {
      url: `http://127.0.0.1:${port}/down`,
      events: ['deployment.failed'],
      secret,
    });
    const p = await emailProject('Hooked down', [REFUSED]);
    const dep = await startDeployment(srv, p.id, env);
    expect((await srv.waitDeployment(dep.id)).state).toBe('failed');
    await waitFor(
      'a failed attempt',
      async () => {
        const [d] = await srv.must('GET', `/api/webhooks/${hook.id}/deliveries`);
        return d?.attempts >= 1 && d.status === 'pending' && d.lastError ? d : null;
      },
      20_000,
      100,
    );
    await srv.stop({ keepData: true });
    const receiver = await startReceiver(port, [204], got);
    try {
      srv = await startServer({
        reuse: srv,
        env: { CUTTLE_SMTP_URL: `smtp://127.0.0.1:${smtpPort}`, CUTTLE_WEBHOOK_RETRY_BASE_MS: '200' },
      });
      await waitFor('the delivery after the restart', async () => got.length >= 1 || null, 60_000, 100);
      expect(got[0].headers['x-cuttle-signature']).toBe(hmac(secret, got[0].body));
      expect(JSON.parse(got[0].body)).toMatchObject({ event: 'deployment.failed', data: { deploymentId: dep.id } });
      const [d] = await waitFor(
        'delivered in the log',
        async () => {
          const list = await srv.must('GET', `/api/webhooks/${hook.id}/deliveries`);
          return list[0]?.status === 'delivered' ? list : null;
        },
        10_000,
        100,
      );
      expect(d.lastStatusCode).toBe(204);
    } finally {
      await closeServer(receiver);
    }
  }, 180_000);
});

describe('email without an SMTP server configured', () => {
  // A server without CUTTLE_SMTP_URL fails the action with a line saying what to set, and sends nothing.
  it('fails the email action naming CUTTLE_SMTP_URL', async () => {
    const bare = await startServer();
    try {
      const envId = (await bare.must('POST', '/api/environments', { name: 'Staging' })).id;
      const p = await createProject(bare, 'No SMTP', [emailStep(['ops@example.com'])]);
      const dep = await startDeployment(bare, p.id, envId, { version: '0.0.1' });
      const done = await bare.waitDeployment(dep.id);
      const log = (await bare.readLog(dep.id)).map((e) => e.text as string);
      expect(done.state).toBe('failed');
      expect(log).toContain('Email Tell ops failed: CUTTLE_SMTP_URL is not set: this server cannot send email');
      expect(mails.some((m) => m.raw.includes('0.0.1'))).toBe(false);
    } finally {
      await bare.stop();
    }
  }, 120_000);
});
