import { appendFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
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
    expect(
      again
        .all()
        .sort((x, y) => x.leaseId.localeCompare(y.leaseId))
        .map((r) => [r.leaseId, r.state, r.lastLogSeq]),
    ).toEqual([
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
    appendFileSync(join(dir, 'journal.jsonl'), '\n{"i":"a","l":[{"seq":2,"at":"2026'); // the crash
    const again = new Journal(dir);
    again.appendLog('a', [line(2)]);
    again.write(rec('a', 'finished', 2));
    expect(new Journal(dir).all().map((r) => r.state)).toEqual(['finished']);
    expect(new Journal(dir).readLog('a').map((l) => l.seq)).toEqual([1, 2]);
  });

  // A lease whose only record was torn never started its script: nothing to report, and its lines go with it.
  it('forgets a lease whose first record was torn', () => {
    writeFileSync(join(dir, 'journal.jsonl'), '\n{"r":{"leaseId":"a","dep');
    expect(new Journal(dir).all()).toEqual([]);
    expect(new Journal(dir).readLog('a')).toEqual([]);
  });

  // Forgotten leases do not pile up: once none is left the file is emptied, and meanwhile they are not reported.
  it('forgets acknowledged leases and empties the file when none is left', () => {
    const j = new Journal(dir);
    j.write(rec('a', 'running'));
    j.write(rec('b', 'running'));
    j.appendLog('a', [line(1)]);
    j.remove('a');
    expect(new Journal(dir).all().map((r) => r.leaseId)).toEqual(['b']);
    expect(new Journal(dir).readLog('a')).toEqual([]);
    j.remove('b');
    expect(statSync(join(dir, 'journal.jsonl')).size).toBe(0);
    expect(new Journal(dir).all()).toEqual([]);
  });

  // A busy agent always has a lease running, so the file is never emptied: past its size limit it is rewritten with
  // only what is still live.
  it('rewrites a large file with the live leases only', () => {
    const j = new Journal(dir, 2_000);
    j.write(rec('keep', 'running'));
    j.appendLog('keep', [line(1)]);
    for (let i = 0; i < 20; i++) {
      j.write(rec(`gone-${i}`, 'finished'));
      j.appendLog(`gone-${i}`, [line(1), line(2)]);
      j.remove(`gone-${i}`);
    }
    expect(statSync(join(dir, 'journal.jsonl')).size).toBeLessThan(2_000);
    const again = new Journal(dir);
    expect(again.all().map((r) => r.leaseId)).toEqual(['keep']);
    expect(again.readLog('keep').map((l) => l.seq)).toEqual([1]);
  });

  // An agent upgraded with leases in flight still finds what the earlier layouts journaled.
  it('folds records and lines of the earlier layouts into the journal', () => {
    writeFileSync(
      join(dir, 'mid.jsonl'),
      `\n${JSON.stringify({ r: rec('mid', 'finished', 1) })}\n\n${JSON.stringify({ l: [line(1)] })}\n`,
    );
    writeFileSync(join(dir, 'old.json'), JSON.stringify(rec('old', 'running', 1)));
    writeFileSync(join(dir, 'old.log'), JSON.stringify(line(1)) + '\n');
    const j = new Journal(dir);
    expect(readdirSync(dir)).toEqual(['journal.jsonl']);
    expect(
      j
        .all()
        .map((r) => r.leaseId)
        .sort(),
    ).toEqual(['mid', 'old']);
    expect(j.readLog('mid').map((l) => l.seq)).toEqual([1]);
    j.appendLog('old', [line(2)]);
    j.write(rec('old', 'finished', 2));
    expect(new Journal(dir).all().map((r) => r.state)).toEqual(['finished', 'finished']);
    expect(new Journal(dir).readLog('old').map((l) => l.seq)).toEqual([1, 2]);
    j.remove('old');
    j.remove('mid');
    expect(readFileSync(join(dir, 'journal.jsonl'), 'utf8')).toBe('');
  });
});
