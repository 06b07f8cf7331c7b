/**
 * The test servers' and agents' folders of a run live under one folder, CUTTLE_TEST_TMP (made by global-setup). When
 * every test passed they are deleted; when one failed, or with CUTTLE_KEEP_TEST_DIRS=1, they are kept (server and
 * agent logs included) and the folder is named. (Plain JS: Jest loads reporters before any transform applies.)
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

/** Agents killed by a test (SIGKILL) leave their script folder in /dev/shm (see AgentHome.scriptDir): remove them. */
function removeScriptFolders(dir) {
  if (process.platform !== 'linux' || !process.getuid) return;
  const walk = (d, depth) => {
    let entries;
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    if (entries.some((e) => e.name === 'identity.json')) {
      const shm = join(
        '/dev/shm',
        `cuttle-agent-${process.getuid()}-${createHash('sha256').update(d).digest('hex').slice(0, 16)}`,
      );
      if (existsSync(shm)) rmSync(shm, { recursive: true, force: true });
    }
    if (depth < 4) for (const e of entries) if (e.isDirectory()) walk(join(d, e.name), depth + 1);
  };
  walk(dir, 0);
}

export default class CleanupReporter {
  onRunComplete(_contexts, results) {
    const dir = process.env.CUTTLE_TEST_TMP;
    if (!dir) return;
    removeScriptFolders(dir);
    const failed =
      results.numFailedTests > 0 || results.numFailedTestSuites > 0 || results.numRuntimeErrorTestSuites > 0;
    if (failed || process.env.CUTTLE_KEEP_TEST_DIRS === '1') {
      process.stderr.write(`\nthe test servers' and agents' folders (with their logs) are kept in ${dir}\n`);
      return;
    }
    rmSync(dir, { recursive: true, force: true });
  }
}
