/**
 * One agent: identity, connection, leases, journal, package cache. A library class so that one process can hold
 * several agents (the fleet benchmark), each with its own key, certificate and TLS connection.
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { Transform } from 'node:stream';
import { statfs } from 'node:fs/promises';
import { Agent as HttpsAgent, request } from 'node:https';
import { createSecureContext } from 'node:tls';
import { pipeline } from 'node:stream/promises';
import { AGENT_PORT_KEEP_ALIVE_MS, packageDownloadPath, PROTOCOL_VERSION } from '#shared/protocol/index.js';
import { AgentConnection } from './connection/connection.js';
import { classify, withRetries } from './errors.js';
import type { AgentHome, Identity } from './identity.js';
import { Journal } from './journal/journal.js';
import { LeaseManager } from './leases/lease-manager.js';
import type { AgentLogger } from './logger.js';
import { DEFAULT_CACHE_MB, PackageStore } from './packages/package-store.js';
import type { Runner } from './runner/runner.js';
import { AGENT_VERSION } from './registration/register.js';

/** Tries of one package download (see download()). */
const DOWNLOAD_ATTEMPTS = 4;

export class Agent {
  readonly leases: LeaseManager;
  private readonly conn: AgentConnection;
  private heartbeat?: NodeJS.Timeout;
  /** Keep-alive with TLS session reuse for package downloads: a lease with several packages pays one handshake. */
  private readonly https: HttpsAgent;
  private fatalError?: Error;
  private stopped = false;
  private onFatal?: (e: Error) => void;

  constructor(
    private readonly home: AgentHome,
    private readonly id: Identity,
    private readonly log: AgentLogger,
    /**
     * `cacheMb`: the package cache's bound (least recently used archives go past it). `runner`: what runs the actions
     * (default: processes); only the fleet passes another one (the hollow runner), `run` never does.
     */
    opts: { cacheMb?: number; runner?: Runner } = {},
  ) {
    home.prepare();
    // An idle connection is closed here before the server's keep-alive timeout (AGENT_PORT_KEEP_ALIVE_MS) closes it:
    // a request sent on a connection the server is closing fails with a reset.
    // One TLS context for every download: given the PEMs instead, each new connection parses key, certificate and CA
    // again and builds an OpenSSL context (~1 ms of CPU each on the project's VMs), and most downloads open one.
    const secureContext = createSecureContext({ ca: id.caCertificate, cert: id.certificate, key: id.key });
    this.https = new HttpsAgent({
      keepAlive: true,
      maxSockets: 4,
      timeout: AGENT_PORT_KEEP_ALIVE_MS - 1_000,
      secureContext,
    });
    this.leases = new LeaseManager({
      journal: new Journal(home.journalDir),
      packages: new PackageStore(home.packageCacheDir, {
        maxBytes: (opts.cacheMb ?? DEFAULT_CACHE_MB) * 1024 * 1024,
        onEvict: (e) =>
          log.info('evicted a package from the cache (least recently used)', { sha256: e.sha256, bytes: e.bytes }),
      }),
      workDir: home.workDir,
      scriptDir: home.scriptDir,
      machineId: id.machineId,
      send: (m) => this.conn.send(m),
      download: (sha, dest, prefetch) => this.download(sha, dest, prefetch),
      logger: log,
      warmShells: true,
      runner: opts.runner,
    });
    this.conn = new AgentConnection(
      id,
      {
        hello: () => ({
          type: 'hello',
          protocolVersion: PROTOCOL_VERSION,
          agentVersion: AGENT_VERSION,
          leases: this.leases.helloLeases(),
        }),
        onWelcome: (w) => {
          this.leases.setPackageLimits(w);
          this.leases.onConnected();
          if (this.heartbeat) clearInterval(this.heartbeat);
          this.heartbeat = setInterval(
            () => this.conn.send({ type: 'heartbeat', leaseIds: this.leases.runningLeaseIds() }),
            w.heartbeatMs,
          );
        },
        onMessage: (m) => {
          switch (m.type) {
            case 'lease.offer':
              return this.leases.offer(m);
            case 'lease.cancel':
              return this.leases.cancel(m.leaseId, m.reason);
            case 'log.ack':
              return this.leases.logAck(m.leaseId, m.seq);
            case 'result.ack':
              return this.leases.resultAck(m.leaseId);
            case 'health.request':
              return void this.reportHealth(m.requestId);
            case 'package.prefetch':
              return this.leases.prefetch(m);
          }
        },
        onDisconnected: () => {
          if (this.heartbeat) clearInterval(this.heartbeat);
          this.heartbeat = undefined;
        },
        onFatal: (e) => {
          this.fatalError = e;
          this.log.error(e.message);
          this.onFatal?.(e);
        },
      },
      log,
    );
  }

  get connected() {
    return this.conn.connected;
  }

  /** Starts; `onFatal` is called if the agent can never work (revoked, refused): the caller decides to exit. */
  start(onFatal?: (e: Error) => void) {
    this.onFatal = onFatal;
    this.leases.restore();
    this.conn.start();
  }

  async stop() {
    this.stopped = true;
    if (this.heartbeat) clearInterval(this.heartbeat);
    await this.leases.stop();
    this.conn.stop();
    this.https.destroy();
    this.home.releaseScriptDir();
  }

  get error() {
    return this.fatalError;
  }

  private async reportHealth(requestId: string) {
    const fs = await statfs(this.home.workDir).catch(() => null);
    this.conn.send({
      type: 'health.report',
      requestId,
      agentVersion: AGENT_VERSION,
      workDir: this.home.workDir,
      freeDiskBytes: fs ? fs.bavail * fs.bsize : 0,
      uptimeSeconds: Math.round(process.uptime()),
      runningLeases: this.leases.runningLeaseIds().length,
    });
  }

  /**
   * A package download, tried again after an error worth retrying (the table in errors.ts: a connection reset, a
   * timeout, a 5xx): up to DOWNLOAD_ATTEMPTS in all, with back-off. A refusal (4xx) is final.
   */
  private download(sha256: string, dest: string, prefetch = false): Promise<string> {
    return withRetries(() => this.downloadOnce(sha256, dest, prefetch), {
      attempts: DOWNLOAD_ATTEMPTS,
      retryable: (e) => classify(e).cls === 'retryable',
      baseMs: 250,
      capMs: 5_000,
      stopped: () => this.stopped,
      onRetry: (e, delay, attempt) =>
        this.log.warn(`package download failed (${(e as Error).message}); retrying in ${delay} ms`, {
          sha256,
          attempt,
        }),
    });
  }

  /**
   * GET /packages/<sha256> on the agent port, authenticated by our client certificate. Returns the sha256 of the
   * bytes written, hashed on the way (the store verifies it before using the file).
   */
  private downloadOnce(sha256: string, dest: string, prefetch: boolean): Promise<string> {
    const url = new URL(packageDownloadPath(sha256, prefetch), this.id.agentUrl);
    return new Promise((resolve, reject) => {
      const req = request(url, { agent: this.https, timeout: 60_000 }, (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          reject(
            Object.assign(new Error(`package download refused: HTTP ${res.statusCode}`), { status: res.statusCode }),
          );
          return;
        }
        const hash = createHash('sha256');
        const tap = new Transform({
          transform(chunk: Buffer, _enc, done) {
            hash.update(chunk);
            done(null, chunk);
          },
        });
        // A 1 MiB buffer lets the file stream gather the 16 KiB TLS records into large writes while one is under
        // way: one write(2) per record cost ~3 ms of CPU per MiB here, about as much as TLS, HTTP and sha256 together.
        pipeline(res, tap, createWriteStream(dest, { mode: 0o600, highWaterMark: 1 << 20 })).then(
          () => resolve(hash.digest('hex')),
          reject,
        );
      });
      req.on('timeout', () => req.destroy(new Error('package download timed out')));
      req.on('error', reject);
      req.end();
    });
  }
}
