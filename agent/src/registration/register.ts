/**
 * First start: make a key pair here (the private key never leaves this machine), check that the server's CA is the
 * one pinned in the token (as `kubeadm join` does), then send a CSR (ECDSA P-256 key) and receive a certificate.
 */
import { generateKeyPairSync } from 'node:crypto';
import { request } from 'node:https';
import { isIP } from 'node:net';
import { connect, type PeerCertificate, type DetailedPeerCertificate } from 'node:tls';
import { createCsrPem, derToPem, normalizeFingerprint, parseRegistrationToken } from '#shared/pki/index.js';
import { classify, FatalAgentError, withRetries } from '../errors.js';
import type { AgentHome, Identity } from '../identity.js';
import { CUTTLE_VERSION } from '#shared/version.js';
import { RegistrationSchema } from '#shared/api/types.js';

/** The agent's version: the installation's (shared/src/version.ts). */
export const AGENT_VERSION = CUTTLE_VERSION;

export interface RegisterOptions {
  serverUrl: string;
  token: string;
  name: string;
  roles: string[];
  environments: string[];
  /** Sent only when given: a server that predates labels refuses fields it does not know. */
  labels?: Record<string, string>;
}

/** Connects without trusting anything, and returns the CA certificate of the chain if its fingerprint is the pin. */
export async function fetchPinnedCa(serverUrl: string, pin: string): Promise<string> {
  const u = new URL(serverUrl);
  const chain = await new Promise<DetailedPeerCertificate>((resolve, reject) => {
    const host = u.hostname.replace(/^\[|\]$/g, '');
    // SNI carries host names only (RFC 6066), never an IP address.
    const s = connect(
      { host, port: Number(u.port || 443), rejectUnauthorized: false, ...(isIP(host) ? {} : { servername: host }) },
      () => {
        const c = s.getPeerCertificate(true);
        s.end();
        resolve(c);
      },
    );
    s.setTimeout(15_000, () => s.destroy(new Error('timeout while fetching the server certificate')));
    s.once('error', reject);
  });
  const seen = new Set<string>();
  for (
    let c: PeerCertificate | undefined = chain;
    c && c.raw && !seen.has(c.fingerprint256);
    c = (c as DetailedPeerCertificate).issuerCertificate
  ) {
    seen.add(c.fingerprint256);
    if (normalizeFingerprint(c.fingerprint256) === pin) return derToPem(c.raw);
  }
  throw new FatalAgentError(
    `the server's CA does not match the token's pin (${pin.slice(0, 16)}…): refusing to register with ${serverUrl}`,
  );
}

function postJson(url: string, body: unknown, ca: string): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const data = Buffer.from(JSON.stringify(body));
    const req = request(
      url,
      {
        method: 'POST',
        ca,
        headers: { 'content-type': 'application/json', 'content-length': data.length },
        timeout: 30_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: Record<string, unknown>;
          try {
            json = JSON.parse(text) as Record<string, unknown>;
          } catch {
            json = { message: text };
          }
          resolve({ status: res.statusCode ?? 0, json });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(data);
  });
}

export async function register(home: AgentHome, o: RegisterOptions): Promise<Identity> {
  const parsed = parseRegistrationToken(o.token);
  if (!parsed) throw new FatalAgentError('--token is not a Cuttle registration token (it starts with "cuttle1.")');
  const caCertificate = await fetchPinnedCa(o.serverUrl, parsed.caFingerprint);

  // ECDSA P-256: made in well under a millisecond (RSA 2048 took 50–200 ms of CPU here, what a fleet registering
  // waited on), and cheaper to sign with at every TLS handshake. The server still accepts RSA keys of older agents.
  const { privateKey } = generateKeyPairSync('ec', {
    namedCurve: 'prime256v1',
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  home.saveKey(privateKey);
  const csr = createCsrPem(o.name, privateKey);

  const url = new URL('/api/agents/register', o.serverUrl).toString();
  const res = await postJson(
    url,
    {
      token: o.token,
      name: o.name,
      roles: o.roles,
      environmentIds: o.environments.length ? o.environments : undefined,
      labels: o.labels && Object.keys(o.labels).length ? o.labels : undefined,
      csr,
      agentVersion: AGENT_VERSION,
    },
    caCertificate,
  );
  if (res.status !== 201) {
    const m = res.json?.message;
    const msg = Array.isArray(m) ? m.join('; ') : String(m ?? '');
    // The server's code decides (the table in errors.ts): a refusal stops the agent, a server error is retried.
    throw Object.assign(new Error(`registration refused (${res.status}): ${msg}`), {
      status: res.status,
      body: res.json,
    });
  }
  // The answer is checked once, here, against the contract's schema: a malformed one is a server error (retried).
  const answer = RegistrationSchema.safeParse(res.json);
  if (!answer.success)
    throw Object.assign(
      new Error(`the server's registration answer is malformed: ${answer.error.issues[0]?.message}`),
      { status: 502 },
    );
  const identity: Identity = {
    machineId: answer.data.machineId,
    name: o.name,
    serverUrl: o.serverUrl,
    agentUrl: answer.data.agentUrl,
    caFingerprint: parsed.caFingerprint,
    key: privateKey,
    certificate: answer.data.certificate,
    caCertificate: answer.data.caCertificate,
  };
  if (
    normalizeFingerprint(new (await import('node:crypto')).X509Certificate(identity.caCertificate).fingerprint256) !==
    parsed.caFingerprint
  )
    throw new FatalAgentError("the CA certificate returned by the server does not match the token's pin");
  home.save(identity);
  return identity;
}

/**
 * Registers, retrying what the error table calls retryable (server not up yet, busy, restarting) with back-off and
 * jitter; a fatal refusal (used-up token, pin mismatch, name taken) is thrown at once. `attempts` bounds the retries.
 */
export async function registerWithRetry(
  home: AgentHome,
  o: RegisterOptions,
  onRetry: (e: Error, delayMs: number, hint: string) => void = () => {},
  attempts = Infinity,
): Promise<Identity> {
  try {
    return await withRetries(() => register(home, o), {
      attempts,
      retryable: (e) => classify(e).cls !== 'fatal',
      onRetry: (e, delay) => onRetry(e as Error, delay, classify(e).hint),
    });
  } catch (e) {
    const { cls, hint } = classify(e);
    throw e instanceof FatalAgentError || cls !== 'fatal'
      ? e
      : new FatalAgentError(`${(e as Error).message} (${hint})`);
  }
}
