/**
 * What a package archive may hold: one judgement, made by the server when a package is uploaded (so that a bad one is
 * a 400 naming the entry) and again by the agent while it unpacks (so that nothing reaches the disk that the server
 * would not have accepted, whatever the server let through). Pure: it sees entry headers, never the file system.
 *
 * Refused:
 * - anything but files, folders and symlinks (hard links, devices, fifos);
 * - absolute paths, `..` segments, backslashes, an entry that would replace the package folder itself;
 * - a name longer than `ARCHIVE_LIMITS.nameBytes` or a path or link target longer than `ARCHIVE_LIMITS.pathBytes`
 *   (UTF-8 bytes): file systems refuse longer names, and the agent's install folder comes in front of every path;
 * - more than `ARCHIVE_LIMITS.entries` entries, or files adding up to more than the unpacked bound;
 * - an entry at or below a symlink that came before it (it would be written through the link), and a symlink where
 *   an entry came before at or below its path (the final tree would depend on extraction order);
 * - once every entry is seen, a symlink whose target, resolved as the kernel would (following the archive's other
 *   links), lands outside the package.
 */

export const ARCHIVE_LIMITS = {
  /** One path segment, in UTF-8 bytes: NAME_MAX of Linux and of every common file system. */
  nameBytes: 255,
  /**
   * A whole entry path, or a symlink's target, in UTF-8 bytes: under an install folder of up to ~3,000 bytes it stays
   * within Linux's PATH_MAX of 4,096.
   */
  pathBytes: 1_024,
  /** Folders above an entry (path segments): deeper than real packages nest, shallower than a hostile one may. */
  depth: 128,
  /** Entries in one package (files, folders and links): tens of thousands is a large application. */
  entries: 500_000,
} as const;

/** The unpacked bound when a server does not say (CUTTLE_MAX_UNPACKED_MB's default). */
export const DEFAULT_MAX_UNPACKED_BYTES = 4_096 * 1024 * 1024;

/** An archive entry as node-tar describes it (`type` is node-tar's name: File, Directory, SymbolicLink, Link ...). */
export interface ArchiveEntryHeader {
  path: string;
  type: string;
  linkpath?: string;
  size?: number;
}

const REGULAR_FILES = new Set(['File', 'OldFile', 'ContiguousFile']);

/**
 * Judges an archive's entries in the order they come, before each is written, and the whole at the end. The first
 * problem is kept: `admit` answers false from then on, and `verdict()` gives it, naming the entry.
 *
 * Paths are held as a tree of numbered nodes (a node per distinct folder or entry, found from its parent's node by
 * its name), so judging an entry costs time in proportion to its depth, never to the square of its path's length:
 * a hostile archive of half a million deep paths must not keep the server's event loop busy for minutes.
 */
export class ArchiveVetting {
  private problem: string | null = null;
  /** Each node's children by name; node 0 is the package folder. */
  private readonly children: Array<Map<string, number>> = [new Map()];
  /** Symlinks by node: their path and raw target. */
  private readonly links = new Map<number, { path: string; target: string }>();
  private entries = 0;
  /** Bytes of the files admitted so far. */
  unpackedBytes = 0;

  constructor(private readonly maxUnpackedBytes: number = DEFAULT_MAX_UNPACKED_BYTES) {}

  refuse(problem: string): false {
    this.problem ??= problem;
    return false;
  }

  /** Whether this entry may be written; false also once any earlier entry was refused. */
  admit(e: ArchiveEntryHeader): boolean {
    if (this.problem) return false; // the package is refused anyway: write nothing more
    const problem = entryProblem(e);
    if (problem) return this.refuse(problem);
    if (++this.entries > ARCHIVE_LIMITS.entries)
      return this.refuse(`the package has more than ${ARCHIVE_LIMITS.entries} entries`);
    if (REGULAR_FILES.has(e.type)) {
      this.unpackedBytes += e.size ?? 0;
      if (this.unpackedBytes > this.maxUnpackedBytes)
        return this.refuse(
          `the package unpacks to more than ${formatMb(this.maxUnpackedBytes)} (at entry ${JSON.stringify(e.path)}; the server's CUTTLE_MAX_UNPACKED_MB)`,
        );
    }
    const path = normalizeEntryPath(e.path);
    if (path === '') return true; // the package folder itself
    const parts = path.split('/');
    let node = 0;
    let existed = true;
    for (let i = 0; i < parts.length; i++) {
      let next = this.children[node].get(parts[i]);
      existed = next !== undefined;
      if (next === undefined) {
        next = this.children.length;
        this.children.push(new Map());
        this.children[node].set(parts[i], next);
      }
      node = next;
      if (i < parts.length - 1 && this.links.has(node))
        return this.refuse(
          `archive entry "${path}" would be written through symlink "${parts.slice(0, i + 1).join('/')}"`,
        );
    }
    // An entry at a symlink's path, or a symlink where an entry (or one below it) came before.
    if (this.links.has(node) || (e.type === 'SymbolicLink' && existed))
      return this.refuse(`symlink "${path}" shares its path with another archive entry`);
    if (e.type === 'SymbolicLink') this.links.set(node, { path, target: e.linkpath ?? '' });
    return true;
  }

  /** The package's fault, once the entries read so far are judged as a whole; null if there is none. */
  verdict(): string | null {
    if (!this.problem) {
      for (const [node, { path, target }] of this.links) {
        if (!this.resolvesInside(node, target)) {
          this.problem = `symlink "${path}" -> "${target}" points outside the package folder`;
          break;
        }
      }
    }
    return this.problem;
  }

  /**
   * Resolves a symlink's target the way the kernel would once the archive is extracted, following the archive's
   * other symlinks, and reports whether it stays inside the package. A purely lexical check is not enough: with
   * `x -> .`, the target `x/y/../..` looks like `.` but really climbs one level above the package.
   */
  private resolvesInside(link: number, target: string): boolean {
    const MAX_HOPS = 40; // as Linux's ELOOP limit; a cycle counts as unsafe
    if (target.startsWith('/')) return false;
    // The folder the link lives in, as a stack of nodes from the package folder (0); -1: a folder the archive does
    // not hold, where no link of the archive can be either.
    const stack = this.ancestors(link);
    let pending = target.split('/');
    let hops = 0;
    while (pending.length > 0) {
      const part = pending.shift()!;
      if (part === '' || part === '.') continue;
      if (part === '..') {
        if (stack.length === 1) return false; // climbs above the package folder
        stack.pop();
        continue;
      }
      const top = stack[stack.length - 1];
      const node = top < 0 ? -1 : (this.children[top].get(part) ?? -1);
      const next = node < 0 ? undefined : this.links.get(node);
      if (next === undefined) {
        stack.push(node);
        continue;
      }
      if (++hops > MAX_HOPS || next.target.startsWith('/')) return false;
      pending = [...next.target.split('/'), ...pending]; // relative to the folder holding that link: the stack's top
    }
    return true;
  }

  /** The nodes from the package folder down to the folder holding `node`. */
  private ancestors(node: number): number[] {
    const path = this.links.get(node)!.path.split('/');
    const stack = [0];
    for (const part of path.slice(0, -1)) stack.push(this.children[stack[stack.length - 1]].get(part)!);
    return stack;
  }
}

const formatMb = (bytes: number) => `${Math.round((bytes / 1024 / 1024) * 10) / 10} MB`;

/** Why a single entry is unacceptable on its own, or null. */
function entryProblem(e: ArchiveEntryHeader): string | null {
  const raw = e.path;
  const name = JSON.stringify(raw.length > 300 ? raw.slice(0, 300) + '…' : raw);
  if (e.type === 'Link') return `archive entry ${name} is a hard link, which packages may not contain`;
  if (!REGULAR_FILES.has(e.type) && e.type !== 'Directory' && e.type !== 'SymbolicLink')
    return `archive entry ${name} has type ${e.type}, which packages may not contain`;
  if (raw.startsWith('/') || /^[a-zA-Z]:/.test(raw) || raw.startsWith('\\\\'))
    return `archive entry ${name} escapes the package folder (an absolute path)`;
  // On POSIX a backslash is an ordinary character, elsewhere a separator: refuse the ambiguity outright.
  if (raw.includes('\\')) return `archive entry ${name} contains a backslash`;
  if (raw.split('/').includes('..')) return `archive entry ${name} escapes the package folder (a ".." segment)`;
  if (normalizeEntryPath(raw) === '' && e.type !== 'Directory')
    return `archive entry ${name} would replace the package folder itself`;
  const bytes = Buffer.byteLength(raw);
  if (bytes > ARCHIVE_LIMITS.pathBytes)
    return `archive entry ${name} has a path of ${bytes} bytes (at most ${ARCHIVE_LIMITS.pathBytes})`;
  const segments = raw.split('/');
  if (segments.length > ARCHIVE_LIMITS.depth + 1)
    return `archive entry ${name} is ${segments.length - 1} folders deep (at most ${ARCHIVE_LIMITS.depth})`;
  const long = segments.find((seg) => Buffer.byteLength(seg) > ARCHIVE_LIMITS.nameBytes);
  if (long !== undefined)
    return `archive entry ${name} has a name of ${Buffer.byteLength(long)} bytes (at most ${ARCHIVE_LIMITS.nameBytes})`;
  if (e.type === 'SymbolicLink') {
    const target = e.linkpath ?? '';
    if (Buffer.byteLength(target) > ARCHIVE_LIMITS.pathBytes)
      return `symlink ${name} has a target of ${Buffer.byteLength(target)} bytes (at most ${ARCHIVE_LIMITS.pathBytes})`;
    if (target.startsWith('/'))
      return `symlink ${name} -> ${JSON.stringify(target)} points outside the package folder (an absolute target)`;
  }
  return null;
}

/** `./a//b/` -> `a/b`; the package root itself is ''. */
function normalizeEntryPath(p: string): string {
  return p
    .split('/')
    .filter((s) => s !== '' && s !== '.')
    .join('/');
}
