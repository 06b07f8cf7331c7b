import type { Config } from 'jest';

// Three tiers: `unit` (*.spec.ts next to the code, pure, fast), `database` (*.db.test.ts next to the code: services
// in the test process against a real database, in-process PGlite or PostgreSQL with DATABASE_URL, seconds per file)
// and `integration` (server/test: real server processes, real agents over mTLS, real databases).
// Integration tests build first: they spawn the compiled server and agents exactly as an operator would.
const common = {
  extensionsToTreatAsEsm: ['.ts'],
  transform: {
    '^.+\\.ts$': ['ts-jest', { useESM: true, tsconfig: 'tsconfig.json', diagnostics: { ignoreCodes: [151002] } }],
  },
  moduleNameMapper: {
    '^#shared/(.*)\\.js$': '<rootDir>/shared/src/$1.ts',
    '^(\\.{1,2}/.*)\\.js$': '$1',
  },
  testEnvironment: 'node',
} satisfies Partial<Config>;

const config: Config = {
  projects: [
    { ...common, displayName: 'unit', testMatch: ['<rootDir>/{server,agent,shared,cli}/src/**/*.spec.ts'] },
    { ...common, displayName: 'database', testMatch: ['<rootDir>/server/src/**/*.db.test.ts'] },
    {
      ...common,
      displayName: 'integration',
      testMatch: ['<rootDir>/server/test/**/*.test.ts'],
      globalSetup: '<rootDir>/server/test/support/global-setup.mjs',
      globalTeardown: '<rootDir>/server/test/support/global-teardown.mjs',
    },
  ],
  // Deletes the run's test folders when every test passed (server/test/support/cleanup-reporter.mjs).
  reporters: ['default', '<rootDir>/server/test/support/cleanup-reporter.mjs'],
  testTimeout: 180_000,
  maxWorkers: 2,
};
export default config;
