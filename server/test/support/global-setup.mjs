/**
 * Integration tests run the compiled server and agents as separate processes, exactly as an operator runs them, so
 * the build comes first. With DATABASE_URL set, migrations run once into a template database that each test
 * server clones (CREATE DATABASE ... TEMPLATE); global-teardown drops it. (Plain JS: Jest loads this file before
 * any transform applies.)
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

export const TEMPLATE_ENV = 'CUTTLE_TEST_TEMPLATE_DB';

export function withDatabase(base, db) {
  const u = new URL(base);
  u.pathname = `/${db}`;
  return u.toString();
}

export async function adminQuery(base, sql) {
  const c = new pg.Client({ connectionString: withDatabase(base, 'postgres') });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

export default async function globalSetup() {
  // One folder for every server and agent folder of this run (see cleanup-reporter.mjs).
  process.env.CUTTLE_TEST_TMP ??= mkdtempSync(join(tmpdir(), 'cuttle-run-'));
  execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json'], {
    stdio: 'inherit',
  });
  const base = process.env.DATABASE_URL;
  if (!base) return;
  const template = `cuttle_test_tmpl_${process.pid}`;
  await adminQuery(base, `DROP DATABASE IF EXISTS ${template}`);
  await adminQuery(base, `CREATE DATABASE ${template}`);
  execFileSync(process.execPath, ['dist/server/src/database/migrate.js'], {
    env: { ...process.env, DATABASE_URL: withDatabase(base, template) },
    stdio: 'inherit',
  });
  process.env[TEMPLATE_ENV] = template;
}
