import { appendFileSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Journal, type JournalRecord } from './journal.js';

const rec = (leaseId: string, state: JournalRecord['state'], lastLogSeq = 0): JournalRecord => ({
  leaseId,
  deploymentId: 'd1',
  state,
  acceptedAt: '2026-11-25T00:00:00.000Z',
  actionIndexes: [0],
  lastLogSeq,
});
const line = (seq: number) => ({ seq, at: '2026-11-25T00:00:00.000Z', level: 'info' as const, text: `line ${seq}` });

describe('Journal', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'cuttle-journal-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  // A restarted agent must see each lease's latest state and every journaled line, in order.
  it('keeps the last state of each record and every log line', () => {
    const j = new Journal(dir);
    j.write(rec('a', 'running'));
    j.appendLog('a', [line(1), line(2)]);
    j.appendLog('a', [line(3)]);
    j.write(rec('a', 'finished', 3));
    j.write(rec('b', 'running'));
    const again = new Journal(dir);
    expect(again.all().sort((x, y) => x.leaseId.localeCompare(y.leaseId)).map((r) => [r.leaseId, r.state, r.lastLogSeq])).toEqual([
      ['a', 'finished', 3],
      ['b', 'running', 0],
    ]);
    expect(again.readLog('a').map((l) => l.seq)).toEqual([1, 2, 3]);
    expect(again.readLog('b')).toEqual([]);
  });

  // A crash mid-write tears the last line; what the restarted agent appends after it must not be lost with it.
  it('skips a torn line and keeps what was appended after it', () => {
    const j = new Journal(dir);
    j.write(rec('a', 'running'));
    j.appendLog('a', [line(1)]);
    appendFileSync(join(dir, 'a.jsonl'), '\n{"l":[{"seq":2,"at":"2026'); // the crash
    const again = new Journal(dir);
    again.appendLog('a', [line(2)]);
    again.write(rec('a', 'finished', 2));
    expect(new Journal(dir).all().map((r) => r.state)).toEqual(['finished']);
    expect(new Journal(dir).readLog('a').map((l) => l.seq)).toEqual([1, 2]);
  });

  // A file whose only record was torn belongs to a lease whose script never started: nothing to report.
  it('forgets a lease whose first record was torn', () => {
    writeFileSync(join(dir, 'a.jsonl'), '\n{"r":{"leaseId":"a","dep');
    expect(new Journal(dir).all()).toEqual([]);
    expect(readdirSync(dir)).toEqual([]);
  });

  // An agent upgraded with leases in flight still finds what the earlier layout journaled.
  it('reads records and lines of the earlier layout, and removes them', () => {
    writeFileSync(join(dir, 'old.json'), JSON.stringify(rec('old', 'running', 1)));
    writeFileSync(join(dir, 'old.log'), JSON.stringify(line(1)) + '\n');
    const j = new Journal(dir);
    expect(j.all().map((r) => r.leaseId)).toEqual(['old']);
    j.appendLog('old', [line(2)]);
    j.write(rec('old', 'finished', 2));
    expect(j.all().map((r) => r.state)).toEqual(['finished']);
    expect(j.readLog('old').map((l) => l.seq)).toEqual([1, 2]);
    j.remove('old');
    expect(readdirSync(dir)).toEqual([]);
  });
});
