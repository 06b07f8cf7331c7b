import { sealVariables, openVariables } from '../database/migrations/1764129600000-secrets-at-rest.js';
import { DomainError } from '../common/errors.js';
import { ENC_PREFIX, isEncrypted, keyFingerprint, newKey, parseKey, SecretBox } from './secret-box.js';

const box = new SecretBox(newKey());

describe('SecretBox', () => {
  // What goes in comes out, for any text (empty, unicode, long), and the stored form never contains it.
  it.each(['', 'hunter2', 'pässwörd ✓ 密码', 'x'.repeat(100_000)])('round-trips %#', (plain) => {
    const stored = box.encrypt(plain);
    expect(box.decrypt(stored)).toBe(plain);
    if (plain.length > 3) expect(stored).not.toContain(plain);
  });

  // The stored form is self-describing: enc:v1:<iv>.<tag>.<ciphertext>, base64url, a 12-byte IV and a 16-byte tag.
  it('stores enc:v1:<iv>.<tag>.<ciphertext>', () => {
    const stored = box.encrypt('secret value');
    expect(stored).toMatch(/^enc:v1:[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]+$/);
    expect(isEncrypted(stored)).toBe(true);
    expect(isEncrypted('secret value')).toBe(false);
  });

  // A random IV per value: the same secret stored twice does not show it is the same.
  it('encrypts one value differently each time', () => {
    expect(box.encrypt('same')).not.toBe(box.encrypt('same'));
  });

  // Any change to a stored value is refused (GCM tag), as a domain error, never answered with garbage or ciphertext.
  it('refuses a tampered value', () => {
    const stored = box.encrypt('the real secret');
    const [iv, tag, ct] = stored.slice(ENC_PREFIX.length).split('.');
    const flip = (s: string) => {
      const b = Buffer.from(s, 'base64url');
      b[0] ^= 1;
      return b.toString('base64url');
    };
    for (const bad of [
      `${ENC_PREFIX}${iv}.${tag}.${flip(ct)}`,
      `${ENC_PREFIX}${iv}.${flip(tag)}.${ct}`,
      `${ENC_PREFIX}${flip(iv)}.${tag}.${ct}`,
      `${ENC_PREFIX}${iv}.${tag}`,
      `${ENC_PREFIX}${iv}.${tag}.${ct}!`,
    ]) {
      expect(() => box.decrypt(bad)).toThrow(DomainError);
      try {
        box.decrypt(bad);
      } catch (e) {
        expect((e as DomainError).code).toBe('secret_unreadable');
      }
    }
  });

  // Another key cannot read it, and says which key it is (by fingerprint, not the key) and names CUTTLE_SECRETS_KEY.
  it('refuses a value encrypted under another key', () => {
    const other = new SecretBox(newKey());
    expect(() => other.decrypt(box.encrypt('x'))).toThrow(/CUTTLE_SECRETS_KEY/);
    expect(() => other.decrypt(box.encrypt('x'))).toThrow(other.fingerprint);
  });

  // A plain value where a secret should be is an error, not a value: no plaintext fallback.
  it('refuses a value that is not encrypted', () => {
    expect(() => box.decrypt('plain text')).toThrow(/unencrypted/);
  });

  // seal encrypts once: an encrypted value stays as it is.
  it('seals once', () => {
    const once = box.seal('v');
    expect(box.seal(once)).toBe(once);
  });
});

describe('parseKey', () => {
  const key = newKey();
  // 64 hex characters or base64 (standard or url-safe, with or without padding) of 32 bytes; anything else is null.
  it('reads hex and base64 of 32 bytes', () => {
    for (const text of [
      key.toString('hex'),
      key.toString('hex').toUpperCase(),
      key.toString('base64'),
      key.toString('base64url'),
      ` ${key.toString('base64')}\n`,
    ])
      expect(parseKey(text)?.equals(key)).toBe(true);
  });
  it.each(['', 'short', 'z'.repeat(64), newKey().subarray(0, 16).toString('hex'), Buffer.alloc(33).toString('base64')])(
    'refuses %j',
    (text) => expect(parseKey(text)).toBeNull(),
  );
  // The fingerprint tells keys apart and does not contain the key.
  it('fingerprints keys', () => {
    expect(keyFingerprint(key)).toMatch(/^[0-9a-f]{16}$/);
    expect(keyFingerprint(key)).not.toBe(keyFingerprint(newKey()));
    expect(key.toString('hex')).not.toContain(keyFingerprint(key));
  });
});

describe('the secrets-at-rest migration transform', () => {
  const vars = [
    { name: 'Plain', value: 'visible' },
    { name: 'Password', value: 'p4ss', sensitive: true, scope: { environmentIds: ['e1'] } },
    { name: 'Done', value: box.encrypt('already'), sensitive: true },
    { name: 'Off', value: 'not secret', sensitive: false },
  ];

  // Exactly the sensitive plain values are encrypted; names, scopes, order and other values stay readable.
  it('encrypts exactly the sensitive plain values', () => {
    const sealed = sealVariables(vars, box);
    expect(sealed.changed).toBe(true);
    expect(sealed.variables.map((v) => v.name)).toEqual(['Plain', 'Password', 'Done', 'Off']);
    expect(sealed.variables[0]).toEqual(vars[0]);
    expect(sealed.variables[3]).toEqual(vars[3]);
    expect(sealed.variables[1]).toMatchObject({ name: 'Password', sensitive: true, scope: { environmentIds: ['e1'] } });
    expect(isEncrypted(sealed.variables[1].value)).toBe(true);
    expect(box.decrypt(sealed.variables[1].value)).toBe('p4ss');
    expect(sealed.variables[2].value).toBe(vars[2].value);
  });

  // Running it again changes nothing (already encrypted values are skipped).
  it('is idempotent', () => {
    const once = sealVariables(vars, box).variables;
    const twice = sealVariables(once, box);
    expect(twice.changed).toBe(false);
    expect(twice.variables).toEqual(once);
    expect(sealVariables(once, null).changed).toBe(false);
  });

  // The down migration gives back the plain values.
  it('is undone by openVariables', () => {
    const opened = openVariables(sealVariables(vars, box).variables, box);
    expect(opened).toEqual([vars[0], vars[1], { ...vars[2], value: 'already' }, vars[3]]);
  });
});
