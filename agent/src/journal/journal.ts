/**
 * The journal: what the agent must not forget across a crash or restart. A lease is recorded when accepted (so a
 * restart knows a script may have been running) and its result is recorded before it is sent; the record is removed
 * only when the server acknowledges the result. Files are written atomically (temp file, then rename).
 */
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
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

export class Journal {
  constructor(private readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  private file(leaseId: string) {
    return join(this.dir, `${leaseId.replace(/[^A-Za-z0-9-]/g, '_')}.json`);
  }

  write(rec: JournalRecord) {
    const f = this.file(rec.leaseId);
    writeFileSync(f + '.tmp', JSON.stringify(rec), { mode: 0o600 });
    renameSync(f + '.tmp', f);
  }

  remove(leaseId: string) {
    rmSync(this.file(leaseId), { force: true });
    rmSync(this.logFile(leaseId), { force: true });
  }

  private logFile(leaseId: string) {
    return this.file(leaseId).replace(/\.json$/, '.log');
  }

  /** Log lines are journaled (already masked) before they are sent, and kept until the lease's result is acked. */
  appendLog(leaseId: string, lines: LogLine[]) {
    if (lines.length) appendFileSync(this.logFile(leaseId), lines.map((l) => JSON.stringify(l)).join('\n') + '\n', { mode: 0o600 });
  }

  /** The journaled lines of a lease; a torn last line (a crash mid-write) is dropped: it was never sent. */
  readLog(leaseId: string): LogLine[] {
    const f = this.logFile(leaseId);
    if (!existsSync(f)) return [];
    const out: LogLine[] = [];
    for (const l of readFileSync(f, 'utf8').split('\n')) {
      if (!l) continue;
      try {
        out.push(JSON.parse(l));
      } catch {
        break;
      }
    }
    return out;
  }

  all(): JournalRecord[] {
    const out: JournalRecord[] = [];
    for (const f of readdirSync(this.dir)) {
      if (!f.endsWith('.json')) continue;
      try {
        out.push(JSON.parse(readFileSync(join(this.dir, f), 'utf8')));
      } catch {
        rmSync(join(this.dir, f), { force: true }); // a torn write of a record that was never sent
      }
    }
    return out;
  }
}
