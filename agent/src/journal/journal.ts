/**
 * The journal: what the agent must not forget across a crash or restart. A lease is recorded when accepted (so a
 * restart knows a script may have been running) and its result is recorded before it is sent; the record is removed
 * only when the server acknowledges the result.
 *
 * One append-only file, `journal.jsonl`, one entry per line: `{"r": record}` for each state of a lease's record (the
 * last one counts), `{"i": leaseId, "l": [log lines]}` for each batch of journaled log lines, `{"x": leaseId}` when
 * a lease is forgotten. Appending to a file that exists costs no file creation: on a busy journaling file system,
 * creating files (a temp file and a rename per state, a file per lease's log) was what made a wide window slow to
 * start. The file is emptied when no lease is left in it, and rewritten with only the live leases if it grows large
 * while leases keep running. A line torn by a crash mid-write is skipped: what it held was never sent.
 *
 * Journals of the earlier layouts (`<leaseId>.json` and `<leaseId>.log`, or `<leaseId>.jsonl`) are read at start
 * and folded into the file.
 */
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import type { AgentMessageOf, LogLine } from '#shared/protocol/index.js';

export type LeaseResult = AgentMessageOf<'lease.result'>;

export interface JournalRecord {
  leaseId: string;
  deploymentId: string;
  state: 'running' | 'finished';
  acceptedAt: string;
  actionIndexes: number[];
  result?: LeaseResult;
  /** Log sequence numbers used so far: a resumed agent continues after them instead of reusing them. */
  lastLogSeq: number;
}

type Entry = { r: JournalRecord } | { i: string; l: LogLine[] } | { x: string };

/** Above this size the file is rewritten with only the live leases' entries. */
const COMPACT_BYTES = 64 * 1024 * 1024;

export class Journal {
  private readonly file: string;
  private bytes = 0;
  /** Leases with entries in the file and not yet forgotten. */
  private readonly live = new Set<string>();

  constructor(
    private readonly dir: string,
    private readonly compactBytes = COMPACT_BYTES,
  ) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.file = join(dir, 'journal.jsonl');
    this.foldEarlierLayouts();
    const { records } = this.scan();
    for (const id of records.keys()) this.live.add(id);
    this.bytes = existsSync(this.file) ? statSync(this.file).size : 0;
    if (!this.live.size && this.bytes) this.empty();
  }

  write(rec: JournalRecord) {
    this.live.add(rec.leaseId);
    this.append({ r: rec });
  }

  /** Log lines are journaled (already masked) before they are sent, and kept until the lease's result is acked. */
  appendLog(leaseId: string, lines: LogLine[]) {
    if (lines.length) this.append({ i: leaseId, l: lines });
  }

  remove(leaseId: string) {
    if (!this.live.delete(leaseId)) return;
    if (!this.live.size) return this.empty();
    this.append({ x: leaseId });
    if (this.bytes > this.compactBytes) this.compact();
  }

  /** The journaled lines of a lease, in the order they were journaled. */
  readLog(leaseId: string): LogLine[] {
    return this.scan().lines.get(leaseId) ?? [];
  }

  all(): JournalRecord[] {
    return [...this.scan().records.values()];
  }

  private append(e: Entry) {
    // The leading newline ends a line torn by a crash, so what is appended after a restart stays whole.
    const text = '\n' + JSON.stringify(e) + '\n';
    appendFileSync(this.file, text, { mode: 0o600 });
    this.bytes += Buffer.byteLength(text);
  }

  /** Nothing left to remember: the file is emptied in place (no new file). */
  private empty() {
    if (existsSync(this.file)) truncateSync(this.file, 0);
    this.bytes = 0;
  }

  private scan(file = this.file) {
    const records = new Map<string, JournalRecord>();
    const lines = new Map<string, LogLine[]>();
    for (const e of readEntries(file)) {
      if ('r' in e) records.set(e.r.leaseId, e.r);
      else if ('l' in e) lines.set(e.i, [...(lines.get(e.i) ?? []), ...e.l]);
      else {
        records.delete(e.x);
        lines.delete(e.x);
      }
    }
    // Lines of a lease whose record was never written whole (a crash while accepting) belong to nothing.
    for (const id of lines.keys()) if (!records.has(id)) lines.delete(id);
    return { records, lines };
  }

  /** Rewrites the file with the live leases' records and lines only (atomically: temp file, then rename). */
  private compact() {
    const { records, lines } = this.scan();
    const text = [...records.values()]
      .map(
        (r) =>
          `${JSON.stringify({ r })}\n${lines.has(r.leaseId) ? JSON.stringify({ i: r.leaseId, l: lines.get(r.leaseId) }) + '\n' : ''}`,
      )
      .join('');
    writeFileSync(this.file + '.tmp', text, { mode: 0o600 });
    renameSync(this.file + '.tmp', this.file);
    this.bytes = Buffer.byteLength(text);
  }

  private foldEarlierLayouts() {
    for (const f of readdirSync(this.dir)) {
      const path = join(this.dir, f);
      const id = f.replace(/\.(json|jsonl)$/, '');
      if (f === 'journal.jsonl' || f === 'journal.jsonl.tmp' || id === f) continue;
      let rec: JournalRecord | undefined;
      let log: LogLine[] = [];
      if (f.endsWith('.jsonl')) {
        for (const e of readEntries(path) as Array<{ r?: JournalRecord; l?: LogLine[] }>) {
          if (e.r) rec = e.r;
          if (e.l) log.push(...e.l);
        }
      } else {
        try {
          rec = JSON.parse(readFileSync(path, 'utf8'));
        } catch {
          /* a torn write of a record that was never sent */
        }
        log = readEntries(join(this.dir, `${id}.log`)) as unknown as LogLine[];
      }
      if (rec) {
        this.append({ r: rec });
        if (log.length) this.append({ i: rec.leaseId, l: log });
      }
      for (const old of [path, join(this.dir, `${id}.log`)]) rmSync(old, { force: true });
    }
  }
}

/** The JSON lines of a file, without those torn by a crash mid-write. */
function readEntries(file: string): Entry[] {
  if (!existsSync(file)) return [];
  const out: Entry[] = [];
  for (const l of readFileSync(file, 'utf8').split('\n')) {
    if (!l) continue;
    try {
      out.push(JSON.parse(l));
    } catch {
      /* torn */
    }
  }
  return out;
}
