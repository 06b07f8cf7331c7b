/** `npm run migrate`: applies pending migrations to DATABASE_URL (the server also does this at boot). */
import 'reflect-metadata';
import { DataSource } from 'typeorm';
import { dataSourceOptions } from './data-source.js';

const url = process.env.DATABASE_URL;
if (!url) {
  console.error('DATABASE_URL is not set (the embedded database is migrated by the server at boot)');
  process.exit(2);
}
const ds = new DataSource(dataSourceOptions(url, false));
await ds.initialize();
const applied = await ds.runMigrations({ transaction: 'each' });
console.log(applied.length ? `applied ${applied.map((m) => m.name).join(', ')}` : 'schema is up to date');
await ds.destroy();
