/** The agent's home folder: its identity (key, certificate, CA), journal, package cache and work folder. */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

export interface Identity {
  machineId: string;
  name: string;
  serverUrl: string;
  agentUrl: string;
  caFingerprint: string;
  key: string;
  certificate: string;
  caCertificate: string;
}

export class AgentHome {
  readonly dir: string;
  constructor(dir: string, readonly workDir = join(resolve(dir), 'work')) {
    this.dir = resolve(dir);
  }
  get identityFile() {
    return join(this.dir, 'identity.json');
  }
  get keyFile() {
    return join(this.dir, 'agent.key');
  }
  get certFile() {
    return join(this.dir, 'agent.crt');
  }
  get caFile() {
    return join(this.dir, 'ca.crt');
  }
  get journalDir() {
    return join(this.dir, 'journal');
  }
  get packageCacheDir() {
    return join(this.dir, 'packages');
  }
  /** Private folder for script files while they run (0700): scripts may hold substituted secrets. */
  get scriptDir() {
    return join(this.dir, 'tmp');
  }

  prepare() {
    for (const d of [this.dir, this.journalDir, this.packageCacheDir, this.scriptDir]) mkdirSync(d, { recursive: true, mode: 0o700 });
    mkdirSync(this.workDir, { recursive: true });
  }

  hasIdentity() {
    return existsSync(this.identityFile) && existsSync(this.keyFile) && existsSync(this.certFile);
  }

  load(): Identity {
    const meta = JSON.parse(readFileSync(this.identityFile, 'utf8'));
    return { ...meta, key: readFileSync(this.keyFile, 'utf8'), certificate: readFileSync(this.certFile, 'utf8'), caCertificate: readFileSync(this.caFile, 'utf8') };
  }

  saveKey(pem: string) {
    writeFileSync(this.keyFile, pem, { mode: 0o600 });
  }

  save(id: Identity) {
    writeFileSync(this.certFile, id.certificate);
    writeFileSync(this.caFile, id.caCertificate);
    const { key: _k, certificate: _c, caCertificate: _ca, ...meta } = id;
    // identity.json last, atomically: its presence means the rest is complete.
    writeFileSync(this.identityFile + '.tmp', JSON.stringify(meta, null, 2));
    renameSync(this.identityFile + '.tmp', this.identityFile);
  }
}
