/**
 * Retention of installation folders: each install of a package gets a new folder `<work>/<packageId>/<version>[_n]`
 * (see package-store.ts), so an agent that deploys every day fills its disk unless old ones go. After a package
 * action succeeds, the agent keeps the `keep` newest folders of that package and deletes older ones, except those a
 * running lease on this agent installed. Newest by install time, recorded in a marker
 * `<work>/.installed/<packageId>/<folder>` (scripts may touch the folder's own times; the package's folder holds only
 * its installs). Package ids start with a letter or digit, so `.installed` is never one.
 */
import { lstat, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

const MARKERS = '.installed';
const markerOf = (workDir: string, packageId: string, folder: string) => join(workDir, MARKERS, packageId, folder);

/** Records when an installation folder `<work>/<packageId>/<folder>` was made (right after it is claimed). */
export async function markInstalled(dir: string, at = Date.now()): Promise<void> {
  const parent = dirname(dir);
  const marker = markerOf(dirname(parent), basename(parent), basename(dir));
  await mkdir(dirname(marker), { recursive: true });
  await writeFile(marker, `${at}\n`);
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
    // Hidden entries are staging folders, never installs (versions start with a letter or digit).
    if (name.startsWith('.')) continue;
    const dir = join(parent, name);
    const st = await lstat(dir).catch(() => null);
    if (!st?.isDirectory()) continue;
    const marked = Number((await readFile(markerOf(workDir, packageId, name), 'utf8').catch(() => '')).trim());
    // A folder from before markers existed: its modification time stands in for its install time.
    installs.push({ dir, at: Number.isFinite(marked) && marked > 0 ? marked : st.mtimeMs });
  }
  installs.sort((a, b) => b.at - a.at || (a.dir < b.dir ? 1 : -1));
  const doomed = installs.slice(Math.max(1, keep)).filter((i) => !protect.has(i.dir));
  const removed: string[] = [];
  // Markers of folders someone deleted by hand would otherwise stay forever.
  const present = new Set(installs.map((i) => basename(i.dir)));
  for (const m of await readdir(join(workDir, MARKERS, packageId)).catch(() => [] as string[]))
    if (!present.has(m)) await rm(markerOf(workDir, packageId, m), { force: true });
  for (const i of doomed.reverse()) {
    await rm(i.dir, { recursive: true, force: true });
    await rm(markerOf(workDir, packageId, basename(i.dir)), { force: true });
    removed.push(i.dir);
  }
  return removed;
}
