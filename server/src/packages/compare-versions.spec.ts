import { compareVersions } from './packages.service.js';

describe('compareVersions', () => {
  // A release takes the newest version in the feed when none is named: newest as a person reads versions.
  it.each([
    ['1.10.0', '1.9.3'],
    ['2', '1.9'],
    ['v1.2.0', '1.1.9'],
    ['1.0.0', '1.0.0-rc.1'],
    ['1.0.0-rc.2', '1.0.0-rc.1'],
    ['1.0.0+build.10', '1.0.0+build.9'],
    ['1.0.20261202062443', '1.0.20261202062442'],
    ['2024.10.1', '2024.9.30'],
    ['release-b', 'release-a'],
  ])('%s is newer than %s', (newer, older) => {
    expect(compareVersions(newer, older)).toBeGreaterThan(0);
    expect(compareVersions(older, newer)).toBeLessThan(0);
  });

  it('finds a version equal to itself', () => {
    expect(compareVersions('1.2.3', '1.2.3')).toBe(0);
  });
});
