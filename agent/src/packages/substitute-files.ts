/**
 * `substituteInFiles` of a package action: after unpacking, `#{Name}` references in the files the globs match are
 * replaced (as in scripts: `##{` escapes, an unknown name is left as written and reported). The patterns are judged
 * again here (see shared/src/packages/substitute-files.ts), and the package folder is walked without following
 * symlinks: a link is never a match, so no write can land outside the folder whatever the package holds.
 */
import { lstat, readdir, readFile, realpath, writeFile } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { fileMatcher, patternProblem } from '#shared/packages/substitute-files.js';
import { substitute } from '#shared/variables/index.js';

export interface SubstitutionReport {
  /** Package-relative paths whose text changed. */
  changed: string[];
  /** Matched files holding references to names no variable has: `#{Name}` stays as written in them. */
  unknown: Array<{ file: string; names: string[] }>;
  /** Patterns that matched no file. */
  unmatched: string[];
  /** Matches left alone: symlinks (never followed) and files that are not UTF-8 text. */
  skipped: Array<{ file: string; reason: string }>;
}

export class SubstitutionPatternError extends Error {
  override name = 'SubstitutionPatternError';
}

export async function substituteInFiles(
  root: string,
  patterns: string[],
  lookup: (name: string) => string | undefined,
): Promise<SubstitutionReport> {
  for (const p of patterns) {
    const problem = patternProblem(p);
    if (problem) throw new SubstitutionPatternError(`substituteInFiles "${p}" ${problem}`);
  }
  const report: SubstitutionReport = { changed: [], unknown: [], unmatched: [], skipped: [] };
  const realRoot = await realpath(root);
  const matchers = patterns.map((p) => ({ p, match: fileMatcher([p]), hit: false }));
  const visit = async (dir: string): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const full = join(dir, e.name);
      const rel = relative(root, full).split(sep).join('/');
      // A Dirent describes the entry itself: a symlink to a folder is not descended into.
      if (e.isDirectory()) {
        await visit(full);
        continue;
      }
      let hit = false;
      for (const m of matchers)
        if (m.match(rel)) {
          m.hit = true;
          hit = true;
        }
      if (!hit) continue;
      if (!e.isFile()) {
        report.skipped.push({
          file: rel,
          reason: e.isSymbolicLink() ? 'a symlink (links are not followed)' : 'not a regular file',
        });
        continue;
      }
      await substituteOne(realRoot, full, rel, lookup, report);
    }
  };
  await visit(root);
  report.unmatched = matchers.filter((m) => !m.hit).map((m) => m.p);
  return report;
}

async function substituteOne(
  realRoot: string,
  full: string,
  rel: string,
  lookup: (name: string) => string | undefined,
  report: SubstitutionReport,
) {
  // Belt and braces: the walk never follows links, but the file must resolve inside the package folder before it
  // is written.
  const real = await realpath(full);
  const st = await lstat(full);
  if (!st.isFile() || !real.startsWith(realRoot + sep)) {
    report.skipped.push({ file: rel, reason: 'it resolves outside the package folder' });
    return;
  }
  const bytes = await readFile(full);
  if (!bytes.includes('#{')) return;
  const text = bytes.toString('utf8');
  // Rewriting bytes that are not UTF-8 would change them beyond the references: such a file is left as it is.
  if (!Buffer.from(text, 'utf8').equals(bytes)) {
    report.skipped.push({ file: rel, reason: 'not UTF-8 text' });
    return;
  }
  const sub = substitute(text, lookup);
  if (sub.unknown.length) report.unknown.push({ file: rel, names: sub.unknown });
  if (sub.text === text) return;
  // In place: the file keeps its mode and owner.
  await writeFile(full, sub.text, 'utf8');
  report.changed.push(rel);
}
