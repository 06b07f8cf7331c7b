/**
 * The journal: what the agent must not forget across a crash or restart. A lease is recorded when accepted (so a
 * restart knows a script may have been running) and its result is recorded before it is sent; the record is removed
 * only when the server acknowledges the result.
 *
 * One append-only file per lease, `<leaseId>.jsonl`: a line `{"r": record}` for each state of the record (the last
 * one counts) and a line `{"l": [log lines]}` for each batch of journaled log lines. A lease thus costs one file
 * creation and one deletion: on a busy file system, creating files (a temp file and a rename per state, a second
 * file for the log) was what made a wide window slow to start. A line torn by a crash mid-write is skipped: what it
 * held was never sent. Records of the earlier layout (`<leaseId>.json` and `<leaseId>.log`) are still read.
 */
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
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

type Entry = { r: JournalRecord } | { l: LogLine[] };

export class Journal {
  constructor(private readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  private base(leaseId: string) {
    return join(this.dir, leaseId.replace(/[^A-Za-z0-9-]/g, '_'));
  }

  private append(leaseId: string, e: Entry) {
    // The leading newline ends a line torn by a crash, so what is appended after a restart stays whole.
    appendFileSync(`${this.base(leaseId)}.jsonl`, '\n' + JSON.stringify(e) + '\n', { mode: 0o600 });
  }

  write(rec: JournalRecord) {
    this.append(rec.leaseId, { r: rec });
  }

  remove(leaseId: string) {
    const b = this.base(leaseId);
    rmSync(`${b}.jsonl`, { force: true });
    rmSync(`${b}.json`, { force: true });
    rmSync(`${b}.log`, { force: true });
  }

  /** Log lines are journaled (already masked) before they are sent, and kept until the lease's result is acked. */
  appendLog(leaseId: string, lines: LogLine[]) {
    if (lines.length) this.append(leaseId, { l: lines });
  }

  /** The journaled lines of a lease, in the order they were journaled. */
  readLog(leaseId: string): LogLine[] {
    const b = this.base(leaseId);
    const old = readLines(`${b}.log`) as LogLine[];
    const lines = readLines(`${b}.jsonl`).flatMap((e) => ('l' in (e as Entry) ? (e as { l: LogLine[] }).l : []));
    return [...old, ...lines];
  }

  all(): JournalRecord[] {
    const out: JournalRecord[] = [];
    for (const f of readdirSync(this.dir)) {
      const file = join(this.dir, f);
      if (f.endsWith('.jsonl')) {
        let rec: JournalRecord | undefined;
        for (const e of readLines(file)) if ('r' in (e as Entry)) rec = (e as { r: JournalRecord }).r;
        // No whole record: the agent stopped while accepting, before the script could start.
        if (rec) out.push(rec);
        else rmSync(file, { force: true });
      } else if (f.endsWith('.json') && !existsSync(file + 'l')) {
        try {
          out.push(JSON.parse(readFileSync(file, 'utf8')));
        } catch {
          rmSync(file, { force: true }); // a torn write of a record that was never sent
        }
      }
    }
    return out;
  }
}

/** The JSON lines of a file, without those torn by a crash mid-write. */
function readLines(file: string): unknown[] {
  if (!existsSync(file)) return [];
  const out: unknown[] = [];
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
