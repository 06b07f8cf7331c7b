import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import forge from 'node-forge';
import { createCsrPem, signSha256 } from '#shared/pki/index.js';
import { CsrError, ensurePki, serial, signAgentCsr } from './pki.js';

describe('certificates', () => {
  const home = mkdtempSync(join(tmpdir(), 'cuttle-pki-'));
  afterAll(() => rmSync(home, { recursive: true, force: true }));

  // DER integers are minimal: a serial starting with a zero byte is refused by OpenSSL ("illegal padding"); one
  // certificate in 256 had one before serial() made sure it never does. And a serial is positive.
  it('never makes a serial with a leading zero byte or the high bit set', () => {
    for (let i = 0; i < 5_000; i++) {
      const first = parseInt(serial().slice(0, 2), 16);
      expect(first).toBeGreaterThan(0);
      expect(first).toBeLessThan(0x80);
    }
  });

  // A CSR signed by the agent (node:crypto through signSha256) is accepted, and the certificate the CA issues for
  // it verifies against the CA with OpenSSL, names the agent and carries its public key.
  it('issues agent certificates that OpenSSL verifies against the CA', () => {
    const pki = ensurePki(home, [], '127.0.0.1');
    const ca = new X509Certificate(pki.caCert);
    for (let i = 0; i < 20; i++) {
      const { privateKey, publicKey } = generateKeyPairSync('rsa', {
        modulusLength: 2048,
        publicKeyEncoding: { type: 'spki', format: 'pem' },
        privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
      });
      const csr = forge.pki.createCertificationRequest();
      csr.publicKey = forge.pki.publicKeyFromPem(publicKey);
      csr.setSubject([{ name: 'commonName', value: `web-${i}` }]);
      signSha256(csr, privateKey);
      expect(csr.verify()).toBe(true);
      const { certificate } = signAgentCsr(pki, forge.pki.certificationRequestToPem(csr), `web-${i}`);
      const x = new X509Certificate(certificate);
      expect(x.verify(ca.publicKey)).toBe(true);
      expect(x.subject).toContain(`CN=web-${i}`);
      expect(x.publicKey.export({ type: 'spki', format: 'pem' })).toBe(publicKey);
    }
  });

  // New agents make ECDSA P-256 keys (createCsrPem, as the agent's registration does): the certificate issued for
  // one verifies against the CA, names the agent, carries its key, signs only (no keyEncipherment), and works for
  // client authentication with OpenSSL. RSA requests built the same way are accepted as before.
  it.each([
    ['ECDSA P-256', () => generateKeyPairSync('ec', { namedCurve: 'prime256v1' })],
    ['ECDSA P-384', () => generateKeyPairSync('ec', { namedCurve: 'secp384r1' })],
    ['RSA 2048', () => generateKeyPairSync('rsa', { modulusLength: 2048 })],
  ])('issues a certificate for a %s request', (_name, make) => {
    const pki = ensurePki(home, [], '127.0.0.1');
    const ca = new X509Certificate(pki.caCert);
    const { privateKey, publicKey } = make();
    const csr = createCsrPem('web-ec', privateKey.export({ type: 'pkcs8', format: 'pem' }) as string);
    const { certificate, fingerprint } = signAgentCsr(pki, csr, 'web-ec');
    const x = new X509Certificate(certificate);
    expect(x.verify(ca.publicKey)).toBe(true);
    expect(x.checkIssued(ca)).toBe(true);
    expect(x.subject).toContain('CN=web-ec');
    expect(x.publicKey.export({ type: 'spki', format: 'pem' })).toBe(publicKey.export({ type: 'spki', format: 'pem' }));
    expect(x.fingerprint256.replace(/:/g, '').toLowerCase()).toBe(fingerprint);
    expect(x.keyUsage).toContain('1.3.6.1.5.5.7.3.2'); // extKeyUsage clientAuth
    expect(x.ca).toBe(false);
  });

  // An ECDSA request signed with another key, an unknown curve, or a small RSA key is refused with the reason.
  it('refuses ECDSA requests that do not verify and keys outside the rule', () => {
    const pki = ensurePki(home, [], '127.0.0.1');
    const a = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const b = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const pemOf = (k: import('node:crypto').KeyObject) => k.export({ type: 'pkcs8', format: 'pem' }) as string;
    // a's public key with b's signature: swap the signature of b's request into a's.
    const good = createCsrPem('mallory', pemOf(a.privateKey));
    const other = createCsrPem('mallory', pemOf(b.privateKey));
    const bodyOf = (pem: string) => forge.asn1.fromDer(forge.pem.decode(pem)[0].body);
    const forged = bodyOf(good);
    (forged.value as forge.asn1.Asn1[])[2] = (bodyOf(other).value as forge.asn1.Asn1[])[2];
    const forgedPem = forge.pem.encode({ type: 'CERTIFICATE REQUEST', body: forge.asn1.toDer(forged).getBytes() });
    expect(() => signAgentCsr(pki, forgedPem, 'mallory')).toThrow(new CsrError('csr signature does not verify'));
    const k = generateKeyPairSync('ec', { namedCurve: 'secp256k1' });
    expect(() => signAgentCsr(pki, createCsrPem('x', pemOf(k.privateKey)), 'x')).toThrow(/must be ECDSA P-256/);
    const small = generateKeyPairSync('rsa', { modulusLength: 1024 });
    expect(() => signAgentCsr(pki, createCsrPem('x', pemOf(small.privateKey)), 'x')).toThrow(/RSA of at least 2048/);
    expect(() => signAgentCsr(pki, 'not a csr', 'x')).toThrow(CsrError);
  });

  // A CSR whose signature does not match its key (tampered in transit, or forged) is refused.
  it('refuses a CSR signed with another key', () => {
    const pki = ensurePki(home, [], '127.0.0.1');
    const a = generateKeyPairSync('rsa', {
      modulusLength: 2048,
      publicKeyEncoding: { type: 'spki', format: 'pem' },
      privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    });
    const b = generateKeyPairSync('rsa', {
      modulusLength: 2048,
      privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
      publicKeyEncoding: { type: 'spki', format: 'pem' },
    });
    const csr = forge.pki.createCertificationRequest();
    csr.publicKey = forge.pki.publicKeyFromPem(a.publicKey);
    csr.setSubject([{ name: 'commonName', value: 'mallory' }]);
    signSha256(csr, b.privateKey);
    expect(() => signAgentCsr(pki, forge.pki.certificationRequestToPem(csr), 'mallory')).toThrow();
  });
});

describe('corrupted certificate requests', () => {
  const home = mkdtempSync(join(tmpdir(), 'cuttle-pki-'));
  afterAll(() => rmSync(home, { recursive: true, force: true }));

  /** A valid CSR with its signature bits replaced by `sig` (node-forge throws on some of these instead of failing). */
  function withSignature(sig: (s: string) => string): string {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', {
      modulusLength: 2048,
      publicKeyEncoding: { type: 'spki', format: 'pem' },
      privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    });
    const csr = forge.pki.createCertificationRequest();
    csr.publicKey = forge.pki.publicKeyFromPem(publicKey);
    csr.setSubject([{ name: 'commonName', value: 'bent' }]);
    signSha256(csr, privateKey);
    const asn1 = forge.pki.certificationRequestToAsn1(csr);
    const bits = (asn1.value as forge.asn1.Asn1[])[2];
    bits.value = sig(bits.value as string);
    return forge.pem.encode({ type: 'CERTIFICATE REQUEST', body: forge.asn1.toDer(asn1).getBytes() });
  }

  // Every corruption is a CsrError (the registration's 400 with a reason), never another exception (a 500).
  it.each([
    ['a flipped byte', (s: string) => s.slice(0, 100) + String.fromCharCode(s.charCodeAt(100) ^ 0xff) + s.slice(101)],
    ['all zeros', (s: string) => '\0'.repeat(s.length)],
    ['all ones', (s: string) => '\0' + '\xff'.repeat(s.length - 1)],
    ['a truncated signature', (s: string) => s.slice(0, 60)],
    ['an empty signature', () => '\0'],
    ['a signature longer than the key', (s: string) => s + s],
  ])('refuses a CSR with %s as its signature', (_name, sig) => {
    const pki = ensurePki(home, [], '127.0.0.1');
    const pem = withSignature(sig);
    let thrown: unknown;
    try {
      signAgentCsr(pki, pem, 'bent');
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(CsrError);
    expect((thrown as Error).message).toMatch(/^csr /);
  });
});
