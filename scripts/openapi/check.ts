/**
 * `npm run check:openapi` (run by .ci/run): the OpenAPI document users generate clients from must validate and match
 * the shared response types the dashboard and the CLI use.
 * 1. Starts the built server on the embedded database in a temporary folder and takes `/api/docs-json`.
 * 2. Lints it with Redocly's recommended rules: any error fails.
 * 3. Generates a client's types from it with openapi-typescript and type-checks `contract.check.ts`, which requires
 *    every response schema to be the same type as its shared definition (shared/src/api/types.ts), both ways.
 * The document is left at `generated/openapi.json` and the types at `generated/openapi.d.ts` (not committed).
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(fileURLToPath(new URL('../../..', import.meta.url)));
const bin = (name: string) => join(root, 'node_modules', '.bin', name);

async function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => done(port));
    });
  });
}

async function documentFromServer(): Promise<string> {
  const home = mkdtempSync(join(tmpdir(), 'cuttle-openapi-'));
  const [port, agentPort] = [await freePort(), await freePort()];
  const server = spawn(process.execPath, [join(root, 'dist/server/src/main.js')], {
    env: {
      ...process.env,
      CUTTLE_HOME: home,
      CUTTLE_PORT: String(port),
      CUTTLE_AGENT_PORT: String(agentPort),
      DATABASE_URL: '',
      CUTTLE_LOG_LEVEL: 'error',
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  try {
    await new Promise<void>((done, fail) => {
      let out = '';
      const timer = setTimeout(() => fail(new Error('the server did not start within 90 s')), 90_000);
      server.stdout!.on('data', (c: Buffer) => {
        out += c.toString();
        if (out.includes('listening on')) {
          clearTimeout(timer);
          done();
        }
      });
      server.once('exit', (code) => fail(new Error(`the server exited with ${code}`)));
    });
    process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0'; // the server's own new CA; only this local request
    const res = await fetch(`https://127.0.0.1:${port}/api/docs-json`);
    if (!res.ok) throw new Error(`/api/docs-json answered ${res.status}`);
    return await res.text();
  } finally {
    server.kill('SIGTERM');
    await new Promise((r) => server.once('exit', r));
    rmSync(home, { recursive: true, force: true });
  }
}

const generated = join(root, 'generated');
mkdirSync(generated, { recursive: true });
const doc = join(generated, 'openapi.json');
writeFileSync(doc, await documentFromServer());
console.log(`OpenAPI document: ${doc}`);
execFileSync(bin('redocly'), ['lint', doc, '--format', 'stylish'], {
  stdio: 'inherit',
  env: { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true' },
});
execFileSync(bin('openapi-typescript'), [doc, '--output', join(generated, 'openapi.d.ts')], { stdio: 'inherit' });
execFileSync(
  process.execPath,
  [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'scripts/openapi/tsconfig.json')],
  { stdio: 'inherit' },
);
console.log('the OpenAPI document validates, and a client generated from it matches the shared types');
