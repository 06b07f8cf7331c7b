/**
 * Types of the vendored modules that lit.ts imports by URL (served from node_modules/lit-html, see lit.ts): the same
 * declarations as the installed package's.
 */
declare module '*/vendor/lit-html/lit-html.js' {
  export * from 'lit-html';
}
declare module '*/vendor/lit-html/directives/guard.js' {
  export * from 'lit-html/directives/guard.js';
}
declare module '*/vendor/lit-html/directives/live.js' {
  export * from 'lit-html/directives/live.js';
}
declare module '*/vendor/lit-html/directives/repeat.js' {
  export * from 'lit-html/directives/repeat.js';
}
/** The API's client error, shared with the CLI and served from the build's dist/shared/src/api (server/src/main.ts). */
declare module '*/shared/api/api-error.js' {
  export * from '#api-error';
}
