/**
 * Sensitive values at rest: AES-256-GCM with a random 12-byte IV per value, stored as one self-describing string
 * `enc:v1:<iv>.<tag>.<ciphertext>` (base64url parts). The version prefix lets a later format (another cipher, a key
 * id) live next to this one; the GCM tag makes any change to a stored value (or a value stored under another key)
 * fail to decrypt instead of yielding garbage.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { DomainError } from '../common/errors.js';

export const ENC_PREFIX = 'enc:v1:';
export const KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const B64URL = /^[A-Za-z0-9_-]*$/;

/** Whether a stored string is one of ours (a value is encrypted once, never twice). */
export const isEncrypted = (s: unknown): s is string => typeof s === 'string' && s.startsWith(ENC_PREFIX);

/**
 * A key given as text: 64 hex characters or base64 (standard or url-safe, padded or not) of exactly 32 bytes.
 * Returns null for anything else, so that the caller names where the text came from.
 */
export function parseKey(text: string): Buffer | null {
  const t = text.trim();
  if (/^[0-9a-fA-F]{64}$/.test(t)) return Buffer.from(t, 'hex');
  if (!/^[A-Za-z0-9+/_-]{43}={0,1}$/.test(t)) return null;
  const b = Buffer.from(t.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  return b.length === KEY_BYTES ? b : null;
}

/**
 * A key's public name: a hash that tells two keys apart in an error message or the check row, and reveals nothing
 * of the key (a 256-bit random key cannot be found from its SHA-256).
 */
export function keyFingerprint(key: Buffer): string {
  return createHash('sha256').update('cuttle-secrets-key:').update(key).digest('hex').slice(0, 16);
}

export class SecretBox {
  readonly fingerprint: string;

  constructor(private readonly key: Buffer) {
    if (key.length !== KEY_BYTES) throw new Error(`a secrets key is ${KEY_BYTES} bytes, not ${key.length}`);
    this.fingerprint = keyFingerprint(key);
  }

  encrypt(plain: string): string {
    const iv = randomBytes(IV_BYTES);
    const c = createCipheriv('aes-256-gcm', this.key, iv);
    const ct = Buffer.concat([c.update(plain, 'utf8'), c.final()]);
    return `${ENC_PREFIX}${iv.toString('base64url')}.${c.getAuthTag().toString('base64url')}.${ct.toString('base64url')}`;
  }

  /**
   * The value of a stored string. Anything that is not a well-formed `enc:v1:` string, or whose tag does not verify
   * (changed in the database, or encrypted under another key), is refused: a secret is never answered with its
   * ciphertext or with a plaintext that happened to be stored.
   */
  decrypt(stored: string): string {
    if (!isEncrypted(stored)) throw unreadable('a sensitive value is stored unencrypted');
    const parts = stored.slice(ENC_PREFIX.length).split('.');
    if (parts.length !== 3 || !parts.every((p) => B64URL.test(p))) throw unreadable('a stored secret is malformed');
    const [iv, tag, ct] = parts.map((p) => Buffer.from(p, 'base64url'));
    if (iv.length !== IV_BYTES || tag.length !== TAG_BYTES) throw unreadable('a stored secret is malformed');
    try {
      const d = createDecipheriv('aes-256-gcm', this.key, iv);
      d.setAuthTag(tag);
      return Buffer.concat([d.update(ct), d.final()]).toString('utf8');
    } catch {
      throw unreadable(
        `a stored secret does not decrypt with this server's key (fingerprint ${this.fingerprint}): it was changed, or encrypted under another CUTTLE_SECRETS_KEY`,
      );
    }
  }

  /** Encrypts a value unless it is encrypted already (what the migration and copies of stored rows rely on). */
  seal(value: string): string {
    return isEncrypted(value) ? value : this.encrypt(value);
  }
}

const unreadable = (detail: string) => new DomainError('secret_unreadable', detail);

/** A fresh random key. */
export const newKey = () => randomBytes(KEY_BYTES);
