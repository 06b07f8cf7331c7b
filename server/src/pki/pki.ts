/**
 * The server's PKI: a CA made on first start (or brought in: see certs/README.md), a server certificate for both
 * listeners, and signing of agents' certificate requests. Keys are made with node:crypto (native, fast) and handed to
 * node-forge for certificates: forge's pure-JS key generation is many times slower.
 */
import { createPublicKey, generateKeyPairSync, randomBytes, verify, type KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { isIP } from 'node:net';
import { join } from 'node:path';
import forge from 'node-forge';
import {
  certificateFingerprint,
  CSR_SIGNATURE_ALGORITHMS,
  signedAsn1Der,
  signSha256,
  spkiAsn1,
} from '#shared/pki/index.js';

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

/** Stands in for the subject's key while forge builds the TBSCertificate; the real SubjectPublicKeyInfo replaces it. */
const PLACEHOLDER_KEY = forge.pki.setRsaPublicKey(new forge.jsbn.BigInteger('3'), new forge.jsbn.BigInteger('3'));
/** The CA certificate parsed once (forge's parsing is JavaScript), not at every registration. */
let lastCa: { pem: string; cert: forge.pki.Certificate } | undefined;
function caOf(pem: string): forge.pki.Certificate {
  if (lastCa?.pem !== pem) lastCa = { pem, cert: forge.pki.certificateFromPem(pem) };
  return lastCa.cert;
}

/** Where the SubjectPublicKeyInfo is in a TBSCertificate: version, serial, signature, issuer, validity, subject, key. */
const TBS_SPKI = 6;

/**
 * A certificate for a public key of any type OpenSSL reads (RSA, ECDSA), signed by the CA (RSA, SHA-256, by OpenSSL).
 * forge builds the ASN.1 (names, validity, extensions) but cannot encode an ECDSA key: the subject's
 * SubjectPublicKeyInfo goes in as the DER the key came in.
 */
function issue(opts: {
  caCert: string;
  caKey: string;
  /** The subject's public key, SubjectPublicKeyInfo DER. */
  spki: Buffer;
  commonName: string;
  hosts?: string[];
  server: boolean;
  years: number;
}): string {
  const ca = caOf(opts.caCert);
  const ec = createPublicKey({ key: opts.spki, format: 'der', type: 'spki' }).asymmetricKeyType === 'ec';
  const cert = forge.pki.createCertificate();
  cert.publicKey = PLACEHOLDER_KEY;
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
    // An ECDSA key signs only (RFC 5480: no keyEncipherment); an RSA key may also encipher (TLS 1.2 RSA exchange).
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: !ec, critical: true },
    { name: 'extKeyUsage', serverAuth: opts.server, clientAuth: true },
  ];
  if (opts.hosts?.length) ext.push({ name: 'subjectAltName', altNames: sanList(opts.hosts) });
  cert.setExtensions(ext);
  (cert as unknown as { siginfo: { algorithmOid: string } }).siginfo.algorithmOid =
    forge.pki.oids.sha256WithRSAEncryption;
  const tbs = (
    forge.pki as unknown as { getTBSCertificate(c: forge.pki.Certificate): forge.asn1.Asn1 }
  ).getTBSCertificate(cert);
  (tbs.value as forge.asn1.Asn1[])[TBS_SPKI] = spkiAsn1(opts.spki);
  return forge.pem.encode({ type: 'CERTIFICATE', body: signedAsn1Der(tbs, opts.caKey).toString('binary') });
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
      spki: createPublicKey(keys.privateKeyPem).export({ type: 'spki', format: 'der' }),
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
 * Signs an agent's CSR. The agent's private key never leaves the target: only its public key arrives here. The key
 * may be ECDSA P-256 (what agents make since #19) or P-384, or RSA of at least 2,048 bits (older agents); the request
 * is read with forge's ASN.1 parser and verified by OpenSSL. Every way a CSR can be unreadable or fail to verify is
 * a CsrError with the reason.
 */
export function signAgentCsr(
  pki: PkiMaterial,
  csrPem: string,
  commonName: string,
): { certificate: string; fingerprint: string } {
  const { spki } = readCsr(csrPem);
  const certificate = issue({ caCert: pki.caCert, caKey: pki.caKey, spki, commonName, server: false, years: 5 });
  return { certificate, fingerprint: certificateFingerprint(certificate) };
}

const KEY_RULE = 'csr key must be ECDSA P-256 (or P-384) or RSA of at least 2048 bits';
const EC_CURVES = new Set(['prime256v1', 'secp384r1']);

/** The CSR's public key (SubjectPublicKeyInfo DER), once its structure, key and signature are checked. */
export function readCsr(csrPem: string): { spki: Buffer; key: KeyObject } {
  const A = forge.asn1;
  let info: forge.asn1.Asn1;
  let algorithm: string;
  let signature: Buffer;
  let spki: Buffer;
  try {
    const blocks = forge.pem.decode(csrPem).filter((b) => /CERTIFICATE REQUEST$/.test(b.type));
    if (blocks.length !== 1) throw new Error('no PEM block "CERTIFICATE REQUEST"');
    // Bit strings are kept as their bytes: the request is verified over the bytes as they came.
    const csr = A.fromDer(blocks[0].body, { strict: true, decodeBitStrings: false } as never);
    const [i, alg, bits] = csr.value as forge.asn1.Asn1[];
    if (!i || !alg || !bits || (csr.value as forge.asn1.Asn1[]).length !== 3) throw new Error('not a CSR');
    if (bits.type !== A.Type.BITSTRING || typeof bits.value !== 'string' || bits.value[0] !== '\0')
      throw new Error('its signature is not a bit string');
    info = i;
    const oid = (alg.value as forge.asn1.Asn1[])[0];
    if (!oid || oid.type !== A.Type.OID) throw new Error('its signature algorithm is unreadable');
    algorithm = A.derToOid(oid.value as string);
    signature = Buffer.from(bits.value.slice(1), 'binary');
    const key = (info.value as forge.asn1.Asn1[])[2];
    if (!key) throw new Error('it has no public key');
    spki = Buffer.from(A.toDer(key).getBytes(), 'binary');
  } catch (e) {
    throw new CsrError(`csr must be a PEM certificate signing request (${reason(e)})`);
  }
  let key: KeyObject;
  try {
    key = createPublicKey({ key: spki, format: 'der', type: 'spki' });
  } catch (e) {
    throw new CsrError(`${KEY_RULE} (${reason(e)})`);
  }
  const d = key.asymmetricKeyDetails ?? {};
  const ok =
    (key.asymmetricKeyType === 'rsa' && (d.modulusLength ?? 0) >= 2048) ||
    (key.asymmetricKeyType === 'ec' && EC_CURVES.has(d.namedCurve ?? ''));
  if (!ok) throw new CsrError(KEY_RULE);
  const alg = CSR_SIGNATURE_ALGORITHMS[algorithm];
  if (!alg || alg.key !== key.asymmetricKeyType)
    throw new CsrError(`csr signature algorithm ${algorithm} does not fit its ${key.asymmetricKeyType} key`);
  let verified: boolean;
  try {
    verified = verify(alg.hash, Buffer.from(A.toDer(info).getBytes(), 'binary'), key, signature);
  } catch (e) {
    throw new CsrError(`csr signature does not verify (${reason(e)})`);
  }
  if (!verified) throw new CsrError('csr signature does not verify');
  return { spki, key };
}

const reason = (e: unknown) => String((e as Error)?.message ?? e).slice(0, 200);

/** The TLS chain to present: the leaf, then the CA, so a registering agent can check the CA against its pin. */
export function serverChain(pki: PkiMaterial): string {
  return pki.serverCert + pki.caCert;
}
