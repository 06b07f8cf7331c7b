/** Where the CLI finds its server and key: CUTTLE_SERVER / CUTTLE_API_KEY / CUTTLE_CA_FILE, then what `cuttle login` stored. */
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';

export interface CliConfig {
  server?: string;
  apiKey?: string;
  /** PEM of the CA to trust (a Cuttle server's own CA is self-made: $CUTTLE_HOME/pki/ca.crt). */
  ca?: string;
  insecure?: boolean;
}

export const configFile = () =>
  process.env.CUTTLE_CONFIG ?? join(process.env.XDG_CONFIG_HOME ?? join(homedir(), '.config'), 'cuttle', 'config.json');

export function loadConfig(): CliConfig {
  const f = configFile();
  const stored: CliConfig = existsSync(f) ? JSON.parse(readFileSync(f, 'utf8')) : {};
  const caFile = process.env.CUTTLE_CA_FILE;
  return {
    server: process.env.CUTTLE_SERVER ?? stored.server,
    apiKey: process.env.CUTTLE_API_KEY ?? stored.apiKey,
    ca: caFile ? readFileSync(caFile, 'utf8') : stored.ca,
    insecure: process.env.CUTTLE_INSECURE === '1' || stored.insecure,
  };
}

export function saveConfig(c: CliConfig) {
  const f = configFile();
  mkdirSync(dirname(f), { recursive: true, mode: 0o700 });
  writeFileSync(f, JSON.stringify(c, null, 2) + '\n', { mode: 0o600 });
  chmodSync(f, 0o600); // the file holds an API key
  return f;
}
