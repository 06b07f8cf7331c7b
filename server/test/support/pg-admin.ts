/** Databases for integration tests on PostgreSQL: one template migrated once, one clone per server started. */
import pg from 'pg';

export function adminUrl(base: string, db = 'postgres'): string {
  const u = new URL(base);
  u.pathname = `/${db}`;
  return u.toString();
}

export function withDatabase(base: string, db: string): string {
  const u = new URL(base);
  u.pathname = `/${db}`;
  return u.toString();
}

export async function adminQuery(base: string, sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: adminUrl(base) });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

export const TEMPLATE_ENV = 'CUTTLE_TEST_TEMPLATE_DB';
