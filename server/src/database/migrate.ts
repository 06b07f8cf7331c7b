/**
 * `npm run migrate`: applies pending migrations to DATABASE_URL (the server also does this at boot), with the secrets
 * key of the server's configuration.
 */
import 'reflect-metadata';
import { DataSource } from 'typeorm';
import { ConfigError, loadConfig } from '../config/config.js';
import { useKeyForMigrations } from '../secrets/migration-key.js';
import { prepareSecretsKey, SecretsKeyError } from '../secrets/secrets-key.js';
import { dataSourceOptions } from './data-source.js';

const url = process.env.DATABASE_URL;
if (!url) {
  console.error('DATABASE_URL is not set (the embedded database is migrated by the server at boot)');
  process.exit(2);
}
// The secrets key as the server finds it (CUTTLE_SECRETS_KEY, else <CUTTLE_HOME>/secrets.key), checked against the
// database. None is made here: a migration that has secrets to encrypt and no key fails, naming CUTTLE_SECRETS_KEY.
try {
  const config = loadConfig();
  const key = await prepareSecretsKey({
    home: config.home,
    envKey: config.secretsKey,
    databaseUrl: url,
    create: false,
  });
  useKeyForMigrations(key?.box);
} catch (e) {
  if (e instanceof ConfigError || e instanceof SecretsKeyError) {
    console.error(`cuttle migrate: ${e.message}`);
    process.exit(2);
  }
  throw e;
}
const ds = new DataSource(dataSourceOptions(url, false));
await ds.initialize();
const applied = await ds.runMigrations({ transaction: 'each' });
console.log(applied.length ? `applied ${applied.map((m) => m.name).join(', ')}` : 'schema is up to date');
await ds.destroy();
