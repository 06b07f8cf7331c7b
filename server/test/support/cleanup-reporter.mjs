/**
 * The test servers' and agents' folders of a run live under one folder, CUTTLE_TEST_TMP (made by global-setup). When
 * every test passed they are deleted; when one failed, or with CUTTLE_KEEP_TEST_DIRS=1, they are kept (server and
 * agent logs included) and the folder is named. (Plain JS: Jest loads reporters before any transform applies.)
 */
import { rmSync } from 'node:fs';

export default class CleanupReporter {
  onRunComplete(_contexts, results) {
    const dir = process.env.CUTTLE_TEST_TMP;
    if (!dir) return;
    const failed = results.numFailedTests > 0 || results.numFailedTestSuites > 0 || results.numRuntimeErrorTestSuites > 0;
    if (failed || process.env.CUTTLE_KEEP_TEST_DIRS === '1') {
      process.stderr.write(`\nthe test servers' and agents' folders (with their logs) are kept in ${dir}\n`);
      return;
    }
    rmSync(dir, { recursive: true, force: true });
  }
}
