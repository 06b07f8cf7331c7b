/**
 * The secrets key for migrations: TypeORM makes migration instances itself, so the key they need (to encrypt what an
 * older version stored in plain text) is handed over here by whoever runs them, the server at boot or
 * `npm run migrate`, after checking it against the database (secrets-key.ts).
 */
import type { SecretBox } from './secret-box.js';

let current: SecretBox | undefined;

export function useKeyForMigrations(box: SecretBox | undefined): void {
  current = box;
}

export function keyForMigrations(): SecretBox | undefined {
  return current;
}
