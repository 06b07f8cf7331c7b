import { adminQuery, TEMPLATE_ENV } from './global-setup.mjs';

/** Drops the template database; each test server drops its own clone when it stops. */
export default async function globalTeardown() {
  const base = process.env.DATABASE_URL;
  const template = process.env[TEMPLATE_ENV];
  if (base && template) await adminQuery(base, `DROP DATABASE IF EXISTS ${template} WITH (FORCE)`);
}
