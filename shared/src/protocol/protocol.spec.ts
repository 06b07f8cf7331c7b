import {
  clampLogText,
  fitAgentMessage,
  LIMITS,
  LOG_TRUNCATED_MARK,
  parseAgentMessage,
  parseServerMessage,
  splitLines,
  type AgentMessage,
  type LogLine,
} from './index.js';

const AT = '2026-12-02T05:54:33.243Z';

describe('agent protocol validation on arrival', () => {
  // Well-formed messages of each direction parse to their typed form.
  it('accepts valid messages', () => {
    expect(parseAgentMessage({ type: 'hello', protocolVersion: 1, agentVersion: '0.1.0', leases: [] }).ok).toBe(true);
    expect(
      parseAgentMessage({ type: 'lease.log', leaseId: 'l1', lines: [{ seq: 1, at: AT, level: 'info', text: 'x' }] }).ok,
    ).toBe(true);
    expect(parseServerMessage({ type: 'lease.cancel', leaseId: 'l1' }).ok).toBe(true);
    const offer = parseServerMessage({
      type: 'lease.offer',
      leaseId: 'l',
      deploymentId: 'd',
      targetRunId: 't',
      stepName: 's',
      actions: [{ index: 0, name: 'a', type: 'script', script: 'true' }],
    });
    expect(offer.ok && offer.message.type === 'lease.offer' && offer.message.machineName).toBe(''); // defaults filled in
  });

  // A malformed message is refused with the offending field named; it never throws.
  it.each([
    [null, '(message)'],
    ['hello', '(message)'],
    [{ type: 'nope' }, 'type'],
    [{ type: 'lease.log', leaseId: 'l', lines: [] }, 'lines'],
    [{ type: 'lease.log', leaseId: 'l', lines: [{ seq: 0, at: 'x', level: 'info', text: '' }] }, 'lines.0.seq'],
    [{ type: 'lease.log', leaseId: 'l', lines: [{ seq: 1, at: 'x', level: 'loud', text: '' }] }, 'lines.0.level'],
    [{ type: 'heartbeat', leaseIds: 'all' }, 'leaseIds'],
    [{ type: 'lease.result', leaseId: 'l', state: 'great', actions: [], lastLogSeq: 0, at: AT }, 'state'],
    // What would fail the database write it joins: a time it cannot read, a count past its integer columns, a NUL.
    [{ type: 'lease.log', leaseId: 'l', lines: [{ seq: 1, at: 'now', level: 'info', text: '' }] }, 'lines.0.at'],
    [{ type: 'lease.log', leaseId: 'l', lines: [{ seq: 2 ** 31, at: AT, level: 'info', text: '' }] }, 'lines.0.seq'],
    [{ type: 'lease.result', leaseId: 'l', state: 'success', actions: [], lastLogSeq: 1e12, at: AT }, 'lastLogSeq'],
    [
      {
        type: 'health.report',
        requestId: 'r',
        agentVersion: '1',
        workDir: '/w',
        freeDiskBytes: 1e308,
        uptimeSeconds: 1,
        runningLeases: 0,
      },
      'freeDiskBytes',
    ],
    [{ type: 'heartbeat', leaseIds: ['a\u0000b'] }, 'leaseIds.0'],
  ])('refuses %j naming %s', (raw, field) => {
    const r = parseAgentMessage(raw);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error).toContain(field);
  });

  it('refuses too many lines in one message', () => {
    const lines = Array.from({ length: LIMITS.logLinesPerMessage + 1 }, (_, i) => ({
      seq: i + 1,
      at: AT,
      level: 'info',
      text: 'x',
    }));
    expect(parseAgentMessage({ type: 'lease.log', leaseId: 'l', lines }).ok).toBe(false);
  });

  // An oversized log line is cut and marked, not dropped.
  it('clamps long log lines', () => {
    const long = 'x'.repeat(LIMITS.logLineChars + 10);
    expect(clampLogText(long)).toHaveLength(LIMITS.logLineChars + LOG_TRUNCATED_MARK.length);
    expect(clampLogText(long).endsWith(LOG_TRUNCATED_MARK)).toBe(true);
    expect(clampLogText('short')).toBe('short');
  });

  // A NUL in an agent's free text (a script may print one) is taken out, not refused: PostgreSQL cannot store it.
  it('takes NUL characters out of free text', () => {
    const r = parseAgentMessage({
      type: 'lease.result',
      leaseId: 'l',
      state: 'failed',
      error: 'a\u0000b',
      actions: [],
      lastLogSeq: 0,
      at: AT,
    });
    expect(r.ok && r.message.type === 'lease.result' && r.message.error).toBe('ab');
  });
});

describe('what the agent sends fits the protocol', () => {
  const line = (seq: number, text: string): LogLine => ({ seq, at: AT, level: 'info', text });

  // Every text the agent sends is cut to its bound and marked, so the message is accepted on arrival: a result
  // refused for its error's length would leave the target to fail as "agent lost".
  it('cuts texts to their bounds', () => {
    const result = fitAgentMessage({
      type: 'lease.result',
      leaseId: 'l',
      state: 'failed',
      error: 'e'.repeat(100_000),
      actions: [],
      lastLogSeq: 1,
      lines: [line(1, 'x'.repeat(100_000))],
      at: AT,
    });
    expect(parseAgentMessage(result).ok).toBe(true);
    const r = result as Extract<AgentMessage, { type: 'lease.result' }>;
    expect(r.error).toHaveLength(LIMITS.errorChars);
    expect(r.error!.endsWith(LOG_TRUNCATED_MARK)).toBe(true);
    expect(r.lines![0].text).toHaveLength(LIMITS.logLineChars + LOG_TRUNCATED_MARK.length);
    const hello = fitAgentMessage({ type: 'hello', protocolVersion: 1, agentVersion: 'v'.repeat(500), leases: [] });
    expect(parseAgentMessage(hello).ok).toBe(true);
    const health = fitAgentMessage({
      type: 'health.report',
      requestId: 'r',
      agentVersion: '1',
      workDir: '/d'.repeat(5_000),
      freeDiskBytes: 1,
      uptimeSeconds: 1,
      runningLeases: 0,
    });
    expect(parseAgentMessage(health).ok).toBe(true);
    // What is within its bounds is left alone, the same object.
    const small: AgentMessage = {
      type: 'lease.result',
      leaseId: 'l',
      state: 'failed',
      error: 'short',
      actions: [],
      lastLogSeq: 0,
      at: AT,
    };
    expect(fitAgentMessage(small)).toEqual(small);
  });

  // Lines go in pieces that each fit a message: by count, and by characters (a thousand 16 KiB lines in one message
  // would pass the server's 4 MB limit, which closes the connection, again at every resend).
  it('splits lines by count and by characters', () => {
    const many = Array.from({ length: 2_500 }, (_, i) => line(i + 1, 'x'));
    expect(splitLines(many, 1_000).map((p) => p.length)).toEqual([1_000, 1_000, 500]);
    const long = Array.from({ length: 100 }, (_, i) => line(i + 1, 'y'.repeat(LIMITS.logLineChars)));
    const pieces = splitLines(long, 1_000);
    expect(pieces.length).toBeGreaterThan(1);
    expect(pieces.flat()).toEqual(long);
    for (const p of pieces) {
      expect(p.reduce((n, l) => n + l.text.length, 0)).toBeLessThanOrEqual(LIMITS.logCharsPerMessage);
      expect(Buffer.byteLength(JSON.stringify({ type: 'lease.log', leaseId: 'l', lines: p }))).toBeLessThan(
        LIMITS.messageBytes,
      );
    }
    // A line alone longer than the budget still travels (it was clamped to 16 KiB before).
    expect(splitLines([line(1, 'z'.repeat(10))], 1)).toEqual([[line(1, 'z'.repeat(10))]]);
  });
});
