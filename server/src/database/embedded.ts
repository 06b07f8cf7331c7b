/**
 * The embedded database: PGlite (PostgreSQL 18 compiled to WASM) in `<home>/db`, served on a loopback port by
 * PGLiteSocketServer so that TypeORM's ordinary `postgres` driver talks to it: one code path for embedded and real
 * PostgreSQL. PGlite lets two processes open one folder and corrupt it, so a lock file holds the folder.
 */
import { closeSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';

export class DataFolderLockedError extends Error {}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Takes `<dir>/cuttle.lock` holding our pid. A lock left by a process that died (kill -9, power loss) is taken over:
 * the pid in it no longer runs. `wx` makes taking the lock atomic between two starting servers.
 */
export function lockFolder(dir: string): () => void {
  const file = join(dir, 'cuttle.lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(file, 'wx', 0o600);
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return () => {
        try {
          if (readFileSync(file, 'utf8') === String(process.pid)) unlinkSync(file);
        } catch {
          /* already gone */
        }
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const holder = Number(readFileSync(file, 'utf8').trim());
      if (holder && holder !== process.pid && pidAlive(holder))
        throw new DataFolderLockedError(
          `the embedded database in ${dir} is in use by another Cuttle server (pid ${holder}); stop it, or set CUTTLE_HOME to another folder`,
        );
      unlinkSync(file);
    }
  }
  throw new DataFolderLockedError(`could not lock ${dir}`);
}

export interface EmbeddedDatabase {
  url: string;
  close(): Promise<void>;
}

export async function startEmbeddedDatabase(home: string, poolSize: number): Promise<EmbeddedDatabase> {
  const dir = join(home, 'db');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const unlock = lockFolder(home);
  try {
    const db = await PGlite.create(dir);
    const server = new PGLiteSocketServer({ db, host: '127.0.0.1', port: 0, maxConnections: poolSize + 2 });
    await server.start();
    const conn = server.getServerConn(); // "127.0.0.1:PORT"
    return {
      url: `postgres://postgres@${conn}/postgres`,
      async close() {
        await server.stop();
        await db.close();
        unlock();
      },
    };
  } catch (e) {
    unlock();
    throw e;
  }
}
