/**
 * Certificate fingerprints and registration tokens, shared by server and agent. A fingerprint is the SHA-256 of
 * the certificate's DER bytes as 64 lowercase hex digits (Node prints the same value as colon-separated upper case
 * in `getPeerCertificate().fingerprint256`; `normalizeFingerprint` turns that into this form).
 */
import { createSign, X509Certificate } from 'node:crypto';
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
