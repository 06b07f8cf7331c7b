/**
 * The database tier of the tests: services run in the test process against a real database with every migration
 * applied, in seconds. In-process PGlite (the embedded database, behind the same socket server the product uses), or,
 * when DATABASE_URL is set, a fresh PostgreSQL database of its own, dropped afterwards.
 */
import { randomBytes } from 'node:crypto';
import { PGlite } from '@electric-sql/pglite';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';
import { DataSource } from 'typeorm';
import { dataSourceOptions, EMBEDDED_POOL_SIZE, POOL_SIZE } from '../../src/database/data-source.js';
import { adminQuery, withDatabase } from './pg-admin.js';

export interface TestDatabase {
  ds: DataSource;
  /** Which database this is, for test names and messages. */
  kind: 'pglite' | 'postgresql';
  close(): Promise<void>;
}

export async function openTestDatabase(): Promise<TestDatabase> {
  const base = process.env.DATABASE_URL;
  if (base) {
    const name = `cuttle_dbt_${randomBytes(6).toString('hex')}`;
    await adminQuery(base, `CREATE DATABASE ${name}`);
    const ds = await new DataSource(dataSourceOptions(withDatabase(base, name), true, POOL_SIZE)).initialize();
    return {
      ds,
      kind: 'postgresql',
      async close() {
        await ds.destroy();
        await adminQuery(base, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      },
    };
  }
  const db = await PGlite.create();
  const server = new PGLiteSocketServer({ db, host: '127.0.0.1', port: 0, maxConnections: EMBEDDED_POOL_SIZE + 2 });
  await server.start();
  const ds = await new DataSource(
    dataSourceOptions(`postgres://postgres@${server.getServerConn()}/postgres`, true, EMBEDDED_POOL_SIZE),
  ).initialize();
  return {
    ds,
    kind: 'pglite',
    async close() {
      await ds.destroy();
      await server.stop();
      await db.close();
    },
  };
}
