/**
 * Certificate fingerprints and registration tokens, shared by server and agent. A fingerprint is the SHA-256 of
 * the certificate's DER bytes as 64 lowercase hex digits (Node prints the same value as colon-separated upper case
 * in `getPeerCertificate().fingerprint256`; `normalizeFingerprint` turns that into this form).
 */
import { X509Certificate } from 'node:crypto';

export function normalizeFingerprint(f: string): string {
  return f.replace(/:/g, '').toLowerCase();
}

export function certificateFingerprint(pem: string): string {
  return normalizeFingerprint(new X509Certificate(pem).fingerprint256);
}

export function derToPem(der: Buffer): string {
  const b64 = der.toString('base64').match(/.{1,64}/g)!.join('\n');
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
