/**
 * Retention of installation folders: each install of a package gets a new folder `<work>/<packageId>/<version>[_n]`
 * (see package-store.ts), so an agent that deploys every day fills its disk unless old ones go. After a package
 * action succeeds, the agent keeps the `keep` newest folders of that package (by install time, recorded in a marker
 * next to the folder, `.installed-<folder>`, since scripts may touch the folder's own times) and deletes older ones,
 * except those a running lease on this agent installed.
 */
import { lstat, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

const MARKER_PREFIX = '.installed-';

/** Records when an installation folder was made (called right after it is claimed). */
export async function markInstalled(dir: string, at = Date.now()): Promise<void> {
  await writeFile(join(dirname(dir), `${MARKER_PREFIX}${basename(dir)}`), `${at}\n`);
}

/**
 * Deletes installation folders of `<workDir>/<packageId>` beyond the `keep` newest, never one in `protect` (absolute
 * paths). Returns the folders deleted, oldest first.
 */
export async function pruneInstallations(
  workDir: string,
  packageId: string,
  keep: number,
  protect: Set<string>,
): Promise<string[]> {
  const parent = join(workDir, packageId);
  const names = await readdir(parent).catch(() => [] as string[]);
  const installs: Array<{ dir: string; at: number }> = [];
  for (const name of names) {
    // Hidden entries are staging folders and markers, never installs (versions start with a letter or digit).
    if (name.startsWith('.')) continue;
    const dir = join(parent, name);
    const st = await lstat(dir).catch(() => null);
    if (!st?.isDirectory()) continue;
    const marked = Number((await readFile(join(parent, `${MARKER_PREFIX}${name}`), 'utf8').catch(() => '')).trim());
    // A folder from before markers existed: its modification time stands in for its install time.
    installs.push({ dir, at: Number.isFinite(marked) && marked > 0 ? marked : st.mtimeMs });
  }
  installs.sort((a, b) => b.at - a.at || (a.dir < b.dir ? 1 : -1));
  const doomed = installs.slice(Math.max(1, keep)).filter((i) => !protect.has(i.dir));
  const removed: string[] = [];
  for (const i of doomed.reverse()) {
    await rm(i.dir, { recursive: true, force: true });
    await rm(join(parent, `${MARKER_PREFIX}${basename(i.dir)}`), { force: true });
    removed.push(i.dir);
  }
  return removed;
}
