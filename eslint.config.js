// ESLint (flat config): JavaScript's and typescript-eslint's recommended rules, Prettier's formatting left to
// Prettier (`npm run lint` runs both; `npm run format` fixes what can be fixed). See README, "Development".
import js from '@eslint/js';
import prettier from 'eslint-config-prettier';
import tseslint from 'typescript-eslint';

/** Protocol and channel names that have a constant: a typo in a literal would be a silent bug. */
const NAMED_CONSTANTS = [
  ['agent:message', 'AGENT_EVENT from shared/src/protocol'],
  ['server:message', 'SERVER_EVENT from shared/src/protocol'],
  ['/live', 'LIVE_NAMESPACE from shared/src/api/live'],
];

export default tseslint.config(
  {
    ignores: [
      'dist/**',
      'generated/**',
      'node_modules/**',
      'coverage/**',
      'test-artifacts/**',
      'bench/results/**',
      '.cuttle*/**',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      ecmaVersion: 2023,
      sourceType: 'module',
      globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly' },
    },
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' },
      ],
      'no-restricted-syntax': [
        'error',
        ...NAMED_CONSTANTS.map(([value, instead]) => ({
          selector: `Literal[value='${value}']`,
          message: `use ${instead}, not the literal '${value}'`,
        })),
      ],
    },
  },
  {
    // Where the constants are defined, and tests that speak the protocol by hand as a hostile client would.
    files: [
      'eslint.config.js',
      'shared/src/protocol/index.ts',
      'shared/src/api/live.ts',
      'server/test/**',
      '**/*.spec.ts',
      '**/*.test.ts',
    ],
    rules: { 'no-restricted-syntax': 'off' },
  },
  {
    // Tests read JSON answers loosely; production code is typed.
    files: ['server/test/**', '**/*.spec.ts', '**/*.test.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off', '@typescript-eslint/no-non-null-assertion': 'off' },
  },
  {
    files: ['**/*.mjs', '**/*.js'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly', setTimeout: 'readonly', URL: 'readonly' } },
  },
  prettier,
);
