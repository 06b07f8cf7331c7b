/** The agent's home folder: its identity (key, certificate, CA), journal, package cache and work folder. */
import { createHash } from 'node:crypto';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
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
  constructor(
    dir: string,
    readonly workDir = join(resolve(dir), 'work'),
  ) {
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
  private memoryDir?: string | null;
  /**
   * Private folder (0700) for script files while they run. Scripts may hold substituted secrets, so on Linux they go
   * to memory (/dev/shm) and never reach the disk; creating them there is also cheaper than on a journaling file
   * system when many targets start at once. Falls back to the home folder when /dev/shm is missing or its folder
   * is not this user's own.
   */
  get scriptDir() {
    if (this.memoryDir === undefined) this.memoryDir = memoryScriptDir(this.dir);
    return this.memoryDir ?? join(this.dir, 'tmp');
  }

  /** At stop: the memory folder goes (its scripts have ended); the next start makes it again. */
  releaseScriptDir() {
    if (this.memoryDir) rmSync(this.memoryDir, { recursive: true, force: true });
    this.memoryDir = undefined;
  }

  prepare() {
    for (const d of [this.dir, this.journalDir, this.packageCacheDir, join(this.dir, 'tmp')])
      mkdirSync(d, { recursive: true, mode: 0o700 });
    mkdirSync(this.workDir, { recursive: true });
  }

  hasIdentity() {
    return existsSync(this.identityFile) && existsSync(this.keyFile) && existsSync(this.certFile);
  }

  load(): Identity {
    const meta = JSON.parse(readFileSync(this.identityFile, 'utf8'));
    return {
      ...meta,
      key: readFileSync(this.keyFile, 'utf8'),
      certificate: readFileSync(this.certFile, 'utf8'),
      caCertificate: readFileSync(this.caFile, 'utf8'),
    };
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

/**
 * The agent's folder in /dev/shm, named after its home (one per agent, found again after a restart, which deletes
 * scripts a crash left there). /dev/shm is shared by every user: the folder is used only if it is a real folder of
 * this user with mode 0700, which nobody else can create, replace or read.
 */
function memoryScriptDir(home: string): string | null {
  if (process.platform !== 'linux' || !process.getuid || !existsSync('/dev/shm')) return null;
  const dir = join(
    '/dev/shm',
    `cuttle-agent-${process.getuid()}-${createHash('sha256').update(home).digest('hex').slice(0, 16)}`,
  );
  try {
    mkdirSync(dir, { mode: 0o700 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') return null;
  }
  try {
    const st = lstatSync(dir);
    if (!st.isDirectory() || st.uid !== process.getuid() || (st.mode & 0o777) !== 0o700) return null;
    for (const f of readdirSync(dir)) if (f.startsWith('script-')) rmSync(join(dir, f), { force: true });
    return dir;
  } catch {
    return null;
  }
}
