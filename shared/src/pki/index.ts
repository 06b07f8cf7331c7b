/**
 * Certificate fingerprints and registration tokens, shared by server and agent. A fingerprint is the SHA-256 of
 * the certificate's DER bytes as 64 lowercase hex digits (Node prints the same value as colon-separated upper case
 * in `getPeerCertificate().fingerprint256`; `normalizeFingerprint` turns that into this form).
 */
import { createPrivateKey, createPublicKey, createSign, type KeyObject, sign, X509Certificate } from 'node:crypto';
import forge from 'node-forge';

export function normalizeFingerprint(f: string): string {
  return f.replace(/:/g, '').toLowerCase();
}

export function certificateFingerprint(pem: string): string {
  return normalizeFingerprint(new X509Certificate(pem).fingerprint256);
}

export function derToPem(der: Buffer): string {
  const b64 = der
    .toString('base64')
    .match(/.{1,64}/g)!
    .join('\n');
  return `-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n`;
}

/**
 * A registration token: `cuttle1.<CA fingerprint>.<secret>`. The fingerprint lets an agent check that the server it
 * is about to hand the secret to is the one whose CA the token came from (as `kubeadm join` pins the CA hash).
 */
const TOKEN_RE = /^cuttle1\.([a-f0-9]{64})\.([A-Za-z0-9_-]{20,200})$/;

export function formatRegistrationToken(caFingerprint: string, secret: string): string {
  return `cuttle1.${caFingerprint}.${secret}`;
}

export function parseRegistrationToken(token: string): { caFingerprint: string; secret: string } | null {
  const m = TOKEN_RE.exec(token.trim());
  return m ? { caFingerprint: m[1], secret: m[2] } : null;
}

type Signable = forge.pki.Certificate | forge.pki.CertificateSigningRequest;

/**
 * What node-forge's `sign(key, sha256)` does for a certificate or a certification request, with the RSA signature
 * made by OpenSSL (node:crypto) instead of forge's JavaScript big integers: about 50 times faster, which is what
 * registering a fleet of agents waits on. forge still builds and encodes the ASN.1.
 */
export function signSha256(obj: Signable, keyPem: string): void {
  const o = obj as Signable & {
    md: forge.md.MessageDigest;
    signatureOid: string;
    siginfo: { algorithmOid: string };
    signature: string;
  };
  const p = forge.pki as unknown as {
    getTBSCertificate(c: Signable): forge.asn1.Asn1;
    getCertificationRequestInfo(c: Signable): forge.asn1.Asn1;
  };
  o.md = forge.md.sha256.create();
  o.signatureOid = o.siginfo.algorithmOid = forge.pki.oids.sha256WithRSAEncryption;
  let signed: forge.asn1.Asn1;
  if ('issuer' in obj)
    signed = (obj as unknown as { tbsCertificate: forge.asn1.Asn1 }).tbsCertificate = p.getTBSCertificate(obj);
  else
    signed = (obj as unknown as { certificationRequestInfo: forge.asn1.Asn1 }).certificationRequestInfo =
      p.getCertificationRequestInfo(obj);
  const der = forge.asn1.toDer(signed).getBytes();
  o.md.update(der); // forge's verify() of the object in hand uses this digest
  const bytes = Buffer.from(der, 'binary');
  o.signature = createSign('sha256').update(bytes).sign(keyPem).toString('binary');
}

const asn1 = forge.asn1;
const OID = {
  sha256WithRSAEncryption: '1.2.840.113549.1.1.11',
  sha384WithRSAEncryption: '1.2.840.113549.1.1.12',
  sha512WithRSAEncryption: '1.2.840.113549.1.1.13',
  ecdsaWithSHA256: '1.2.840.10045.4.3.2',
  ecdsaWithSHA384: '1.2.840.10045.4.3.3',
  ecdsaWithSHA512: '1.2.840.10045.4.3.4',
} as const;

/** Signature algorithms a CSR may use, by OID: the digest and the key type it belongs to. */
export const CSR_SIGNATURE_ALGORITHMS: Record<string, { hash: string; key: 'rsa' | 'ec' }> = {
  [OID.sha256WithRSAEncryption]: { hash: 'sha256', key: 'rsa' },
  [OID.sha384WithRSAEncryption]: { hash: 'sha384', key: 'rsa' },
  [OID.sha512WithRSAEncryption]: { hash: 'sha512', key: 'rsa' },
  [OID.ecdsaWithSHA256]: { hash: 'sha256', key: 'ec' },
  [OID.ecdsaWithSHA384]: { hash: 'sha384', key: 'ec' },
  [OID.ecdsaWithSHA512]: { hash: 'sha512', key: 'ec' },
};

/** AlgorithmIdentifier of a SHA-256 signature by this key type: RSA's has NULL parameters, ECDSA's none (RFC 5758). */
export function sha256AlgorithmAsn1(key: 'rsa' | 'ec'): forge.asn1.Asn1 {
  const oid = asn1.create(
    asn1.Class.UNIVERSAL,
    asn1.Type.OID,
    false,
    asn1.oidToDer(key === 'rsa' ? OID.sha256WithRSAEncryption : OID.ecdsaWithSHA256).getBytes(),
  );
  return asn1.create(
    asn1.Class.UNIVERSAL,
    asn1.Type.SEQUENCE,
    true,
    key === 'rsa' ? [oid, asn1.create(asn1.Class.UNIVERSAL, asn1.Type.NULL, false, '')] : [oid],
  );
}

/** The last key parsed, by its PEM: the server signs every agent's certificate with the same CA key. */
let lastKey: { pem: string; key: KeyObject } | undefined;
function parsedKey(pem: string): KeyObject {
  if (lastKey?.pem !== pem) lastKey = { pem, key: createPrivateKey(pem) };
  return lastKey.key;
}

/** SEQUENCE { signed, algorithm, BIT STRING signature }: a certificate or a certification request, in DER. */
export function signedAsn1Der(signed: forge.asn1.Asn1, keyPem: string): Buffer {
  const key = parsedKey(keyPem);
  const type = key.asymmetricKeyType === 'ec' ? 'ec' : 'rsa';
  const der = Buffer.from(asn1.toDer(signed).getBytes(), 'binary');
  // ECDSA's signature is DER (r, s), as X.509 wants it: node's default dsaEncoding.
  const signature = sign('sha256', der, key);
  const whole = asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
    signed,
    sha256AlgorithmAsn1(type),
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.BITSTRING, false, '\0' + signature.toString('binary')),
  ]);
  return Buffer.from(asn1.toDer(whole).getBytes(), 'binary');
}

/** A public key (SubjectPublicKeyInfo, DER) as forge's ASN.1, for any key type OpenSSL knows. */
export function spkiAsn1(spkiDer: Buffer): forge.asn1.Asn1 {
  return asn1.fromDer(spkiDer.toString('binary'));
}

/**
 * A PKCS#10 certification request for `commonName` with the key in `privateKeyPem` (RSA or ECDSA), signed with
 * SHA-256 by OpenSSL (node:crypto). forge builds the ASN.1 only: it can neither read nor sign an ECDSA key.
 */
export function createCsrPem(commonName: string, privateKeyPem: string): string {
  const spki = createPublicKey(privateKeyPem).export({ type: 'spki', format: 'der' });
  const subject = forge.pki.createCertificationRequest();
  subject.setSubject([{ name: 'commonName', value: commonName }]);
  const info = asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.INTEGER, false, asn1.integerToDer(0).getBytes()),
    forge.pki.distinguishedNameToAsn1(subject.subject),
    spkiAsn1(spki),
    asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, []), // no attributes
  ]);
  return forge.pem.encode({
    type: 'CERTIFICATE REQUEST',
    body: signedAsn1Der(info, privateKeyPem).toString('binary'),
  });
}
