import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, get, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CuttleConfig } from '../config/config.js';
import { PackageFiles } from './package-files.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
/** `p`, or 'still waiting' after `ms`. */
const within = (p: Promise<unknown>, ms = 5_000) => {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise((r) => (timer = setTimeout(() => r('still waiting'), ms)));
  return Promise.race([p.finally(() => clearTimeout(timer)), late]);
};

describe('PackageFiles.send', () => {
  let home: string;
  let files: PackageFiles;
  let server: Server;
  let port: number;
  let bytes: Buffer;
  let big: Buffer;
  let sent: Promise<unknown>[];

  beforeAll(async () => {
    home = mkdtempSync(join(tmpdir(), 'cuttle-package-files-'));
    files = new PackageFiles({ home } as CuttleConfig);
    // Not a multiple of the pool's 256 KiB pieces: the last piece is a short one.
    bytes = randomBytes(3 * 1024 * 1024 + 12_345);
    writeFileSync(files.pathOf(sha(bytes)), bytes);
    // More than the kernel's socket buffers can take in (here up to 32 MiB to receive, 4 MiB to send), so a transfer
    // is still under way when its agent leaves.
    big = Buffer.alloc(64 * 1024 * 1024, 7);
    writeFileSync(files.pathOf(sha(big)), big);
    server = createServer((req, res) => {
      const file = req.url === '/big' ? big : bytes;
      res.writeHead(200, { 'content-length': file.length });
      sent.push(
        files.send(sha(file), res).then(
          () => 'sent',
          (e: Error) => e.message,
        ),
      );
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
  });
  beforeEach(() => (sent = []));
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    rmSync(home, { recursive: true, force: true });
  });

  const download = () =>
    new Promise<Buffer>((resolve, reject) => {
      get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
        const parts: Buffer[] = [];
        res.on('data', (c: Buffer) => parts.push(c));
        res.on('end', () => resolve(Buffer.concat(parts)));
        res.on('error', reject);
      }).on('error', reject);
    });

  // The buffers are reused between pieces and between transfers: each agent must still get exactly the file's bytes.
  it('sends the exact bytes, to several agents at once', async () => {
    const got = await Promise.all([download(), download(), download(), download()]);
    for (const g of got) expect(sha(g)).toBe(sha(bytes));
    expect(await Promise.all(sent)).toEqual(['sent', 'sent', 'sent', 'sent']);
    // And again, now with buffers from the pool.
    expect(sha(await download())).toBe(sha(bytes));
  });

  // An agent that goes away mid-transfer must not leave the transfer (its file handle, its place in the download
  // queue) waiting forever: a response whose socket is gone calls no write callbacks.
  it('gives up when the agent disconnects mid-transfer', async () => {
    const firstBytes = new Promise<void>((resolve) => {
      const req = get({ host: '127.0.0.1', port, path: '/big', agent: false }, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', () => undefined);
    });
    expect(await within(firstBytes)).toBeUndefined();
    await expect(within(sent[0])).resolves.toMatch(/closed|EPIPE|ECONNRESET|destroyed/);
    // The server still serves others afterwards.
    expect(sha(await download())).toBe(sha(bytes));
  });

  // Node's HTTP response drops a write without calling its callback once the socket is destroyed (it then only
  // emits 'close'): the transfer must end on that 'close' too.
  it('gives up on a response that swallows writes and closes', async () => {
    const swallowing = new Writable({ write: () => undefined }); // never calls back, as a response on a dead socket
    const transfer = files.send(sha(bytes), swallowing);
    setTimeout(() => swallowing.destroy(), 50);
    await expect(within(transfer)).rejects.toThrow(/closed/);
  });
});
