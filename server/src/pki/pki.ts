/**
 * The server's PKI: a CA made on first start (or brought in: see certs/README.md), a server certificate for both
 * listeners, and signing of agents' certificate requests. Keys are made with node:crypto (native, fast) and handed to
 * node-forge for certificates: forge's pure-JS key generation is many times slower.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { isIP } from 'node:net';
import { join } from 'node:path';
import forge from 'node-forge';
import { certificateFingerprint, signSha256 } from '#shared/pki/index.js';

export interface PkiMaterial {
  caCert: string;
  caKey: string;
  serverCert: string;
  serverKey: string;
  caFingerprint: string;
}

const YEAR_MS = 365 * 24 * 3600 * 1000;

function newKeyPair() {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  return { privateKeyPem: privateKey, publicKey: forge.pki.publicKeyFromPem(publicKey) };
}

export function serial(): string {
  // Positive (high bit clear) random serial, as RFC 5280 asks, and never a leading zero byte: DER integers are
  // minimal, and OpenSSL refuses "00 0x.." as illegal padding (1 certificate in 256 before this was fixed).
  const b = randomBytes(16);
  b[0] = b[0] & 0x7f || 0x01;
  return b.toString('hex');
}

function makeCa() {
  const keys = newKeyPair();
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = serial();
  cert.validity.notBefore = new Date(Date.now() - 60_000);
  cert.validity.notAfter = new Date(Date.now() + 20 * YEAR_MS);
  const attrs = [
    { name: 'commonName', value: `Cuttle CA ${hostname()}` },
    { name: 'organizationName', value: 'Cuttle' },
  ];
  cert.setSubject(attrs);
  cert.setIssuer(attrs);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  signSha256(cert, keys.privateKeyPem);
  return { cert: forge.pki.certificateToPem(cert), key: keys.privateKeyPem };
}

function sanList(hosts: string[]) {
  return hosts.map((h) => (isIP(h) ? { type: 7, ip: h } : { type: 2, value: h }));
}

function issue(opts: {
  caCert: string;
  caKey: string;
  publicKey: forge.pki.PublicKey;
  commonName: string;
  hosts?: string[];
  server: boolean;
  years: number;
}): string {
  const ca = forge.pki.certificateFromPem(opts.caCert);
  const cert = forge.pki.createCertificate();
  cert.publicKey = opts.publicKey;
  cert.serialNumber = serial();
  cert.validity.notBefore = new Date(Date.now() - 60_000);
  cert.validity.notAfter = new Date(Date.now() + opts.years * YEAR_MS);
  cert.setSubject([
    { name: 'commonName', value: opts.commonName },
    { name: 'organizationName', value: 'Cuttle' },
  ]);
  cert.setIssuer(ca.subject.attributes);
  const ext: object[] = [
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: opts.server, clientAuth: true },
  ];
  if (opts.hosts?.length) ext.push({ name: 'subjectAltName', altNames: sanList(opts.hosts) });
  cert.setExtensions(ext);
  signSha256(cert, opts.caKey);
  return forge.pki.certificateToPem(cert);
}

function certCoversHosts(pem: string, hosts: string[]): boolean {
  const cert = forge.pki.certificateFromPem(pem);
  if (cert.validity.notAfter.getTime() < Date.now() + 30 * 24 * 3600 * 1000) return false;
  const san = cert.getExtension('subjectAltName') as { altNames?: Array<{ value?: string; ip?: string }> } | null;
  const names = new Set((san?.altNames ?? []).map((a) => a.ip ?? a.value));
  return hosts.every((h) => names.has(h));
}

/** Loads the PKI from `<home>/pki`, making what is missing. The CA is never replaced once made. */
export function ensurePki(home: string, extraHosts: string[], listenHost: string): PkiMaterial {
  const dir = join(home, 'pki');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const f = (n: string) => join(dir, n);
  if (!existsSync(f('ca.crt')) || !existsSync(f('ca.key'))) {
    const ca = makeCa();
    writeFileSync(f('ca.key'), ca.key, { mode: 0o600 });
    writeFileSync(f('ca.crt'), ca.cert);
  }
  const caCert = readFileSync(f('ca.crt'), 'utf8');
  const caKey = readFileSync(f('ca.key'), 'utf8');
  const hosts = [
    ...new Set([
      'localhost',
      '127.0.0.1',
      '::1',
      hostname(),
      ...(listenHost && listenHost !== '0.0.0.0' && listenHost !== '::' ? [listenHost] : []),
      ...extraHosts,
    ]),
  ];
  const fresh =
    !existsSync(f('server.crt')) ||
    !existsSync(f('server.key')) ||
    !certCoversHosts(readFileSync(f('server.crt'), 'utf8'), hosts);
  if (fresh) {
    const keys = newKeyPair();
    const cert = issue({
      caCert,
      caKey,
      publicKey: keys.publicKey,
      commonName: hostname(),
      hosts,
      server: true,
      years: 2,
    });
    writeFileSync(f('server.key'), keys.privateKeyPem, { mode: 0o600 });
    writeFileSync(f('server.crt'), cert);
  }
  return {
    caCert,
    caKey,
    serverCert: readFileSync(f('server.crt'), 'utf8'),
    serverKey: readFileSync(f('server.key'), 'utf8'),
    caFingerprint: certificateFingerprint(caCert),
  };
}

export class CsrError extends Error {}

/**
 * Signs an agent's CSR. The agent's private key never leaves the target: only its public key arrives here. Every way
 * a CSR can be unreadable or fail to verify is a CsrError with the reason (node-forge throws on some corrupted
 * signatures instead of returning false).
 */
export function signAgentCsr(
  pki: PkiMaterial,
  csrPem: string,
  commonName: string,
): { certificate: string; fingerprint: string } {
  let csr: forge.pki.CertificateSigningRequest;
  try {
    csr = forge.pki.certificationRequestFromPem(csrPem);
  } catch (e) {
    throw new CsrError(`csr must be a PEM certificate signing request with an RSA key (${reason(e)})`);
  }
  let verified: boolean;
  try {
    verified = csr.verify();
  } catch (e) {
    throw new CsrError(`csr signature does not verify (${reason(e)})`);
  }
  if (!verified) throw new CsrError('csr signature does not verify');
  if (!csr.publicKey) throw new CsrError('csr has no public key');
  const rsa = csr.publicKey as forge.pki.rsa.PublicKey;
  if (!rsa.n || rsa.n.bitLength() < 2048) throw new CsrError('csr key must be RSA of at least 2048 bits');
  const certificate = issue({
    caCert: pki.caCert,
    caKey: pki.caKey,
    publicKey: csr.publicKey,
    commonName,
    server: false,
    years: 5,
  });
  return { certificate, fingerprint: certificateFingerprint(certificate) };
}

const reason = (e: unknown) => String((e as Error)?.message ?? e).slice(0, 200);

/** The TLS chain to present: the leaf, then the CA, so a registering agent can check the CA against its pin. */
export function serverChain(pki: PkiMaterial): string {
  return pki.serverCert + pki.caCert;
}
