import { clampLogText, LIMITS, LOG_TRUNCATED_MARK, parseAgentMessage, parseServerMessage } from './index.js';

describe('agent protocol validation on arrival', () => {
  // Well-formed messages of each direction parse to their typed form.
  it('accepts valid messages', () => {
    expect(parseAgentMessage({ type: 'hello', protocolVersion: 1, agentVersion: '0.1.0', leases: [] }).ok).toBe(true);
    expect(parseAgentMessage({ type: 'lease.log', leaseId: 'l1', lines: [{ seq: 1, at: 'now', level: 'info', text: 'x' }] }).ok).toBe(true);
    expect(parseServerMessage({ type: 'lease.cancel', leaseId: 'l1' }).ok).toBe(true);
    const offer = parseServerMessage({ type: 'lease.offer', leaseId: 'l', deploymentId: 'd', targetRunId: 't', stepName: 's', actions: [{ index: 0, name: 'a', type: 'script', script: 'true' }] });
    expect(offer.ok && offer.message.type === 'lease.offer' && offer.message.startAt).toBe(0);
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
    [{ type: 'lease.result', leaseId: 'l', state: 'great', actions: [], lastLogSeq: 0, at: 'x' }, 'state'],
  ])('refuses %j naming %s', (raw, field) => {
    const r = parseAgentMessage(raw);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error).toContain(field);
  });

  it('refuses too many lines in one message', () => {
    const lines = Array.from({ length: LIMITS.logLinesPerMessage + 1 }, (_, i) => ({ seq: i + 1, at: 'x', level: 'info', text: 'x' }));
    expect(parseAgentMessage({ type: 'lease.log', leaseId: 'l', lines }).ok).toBe(false);
  });

  // An oversized log line is cut and marked, not dropped.
  it('clamps long log lines', () => {
    const long = 'x'.repeat(LIMITS.logLineChars + 10);
    expect(clampLogText(long)).toHaveLength(LIMITS.logLineChars + LOG_TRUNCATED_MARK.length);
    expect(clampLogText(long).endsWith(LOG_TRUNCATED_MARK)).toBe(true);
    expect(clampLogText('short')).toBe('short');
  });
});
