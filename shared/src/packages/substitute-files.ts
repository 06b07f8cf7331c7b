/**
 * `substituteInFiles` of a package action: globs relative to the package root naming the files whose `#{Name}`
 * references the agent replaces after unpacking. One judgement of a pattern, made by the server when a process is
 * saved (so that a bad one is a 400 naming the field) and again by the agent before it touches a file (whatever the
 * server let through). Matching is minimatch's, on paths with `/` separators; the agent walks the package folder
 * without following symlinks, so a match is always a regular file inside the folder.
 */
import { Minimatch } from 'minimatch';

export const SUBSTITUTE_LIMITS = { patterns: 100, patternChars: 500 } as const;

/** Why a pattern is refused, or null when it is a relative glob that cannot name anything outside the package. */
export function patternProblem(p: string): string | null {
  if (typeof p !== 'string' || !p.trim()) return 'must be a glob like "config/*.conf"';
  if (p.length > SUBSTITUTE_LIMITS.patternChars) return `must be at most ${SUBSTITUTE_LIMITS.patternChars} characters`;
  if (p.includes('\0')) return 'must not hold a NUL character';
  // A backslash is an escape in a glob; on Windows-minded input it would be a separator that hides a `..`.
  if (p.includes('\\')) return 'must use "/" as separator and no backslash';
  if (p.startsWith('/') || /^[A-Za-z]:/.test(p)) return 'must be relative to the package root (no absolute path)';
  if (p.split('/').some((s) => s === '..')) return 'must stay inside the package (no ".." segment)';
  return null;
}

/** A matcher over package-relative paths (`config/app.conf`) for a list of patterns already judged sound. */
export function fileMatcher(patterns: string[]): (relPath: string) => boolean {
  // `dot`: a pattern may name `.env`; `nonegate`/`nocomment`: a leading `!` or `#` is part of a file name here.
  const opts = { dot: true, nonegate: true, nocomment: true };
  // Compiled once: a package may hold hundreds of thousands of files, each tried against every pattern.
  const list = patterns.map((p) => new Minimatch(p.replace(/^(\.\/)+/, ''), opts));
  return (rel) => list.some((m) => m.match(rel));
}
