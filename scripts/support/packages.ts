/** Packages for the bench and the integration tests: a real .tar.gz made on disk. */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as tar from 'tar';

/**
 * Writes `<dir>/pkg-XXXXXX.tar.gz` holding the given files (name → content; names ending in .sh are executable), in
 * that order, and returns its path. The folder the files were written to is removed.
 */
export async function writeTarGz(dir: string, files: Record<string, string | Buffer>): Promise<string> {
  const src = mkdtempSync(join(dir, 'pkg-'));
  for (const [name, content] of Object.entries(files)) {
    const f = join(src, name);
    mkdirSync(dirname(f), { recursive: true });
    writeFileSync(f, content, { mode: name.endsWith('.sh') ? 0o755 : 0o644 });
  }
  const out = `${src}.tar.gz`;
  await tar.c({ gzip: true, file: out, cwd: src, portable: true }, Object.keys(files));
  rmSync(src, { recursive: true, force: true });
  return out;
}
