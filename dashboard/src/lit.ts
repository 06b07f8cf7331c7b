/**
 * The rendering library, lit-html, as the browser loads it: no bundler and no import map. An import map would have
 * to be an inline <script>, which the server's Content-Security-Policy (script-src 'self', nothing inline) refuses;
 * so the server serves the package's own ES module files (its production build, which imports its other files by
 * relative paths) from node_modules under /assets/vendor/lit-html/ (server/src/main.ts), and this module, compiled to
 * /assets/lit.js, imports them by a relative URL. TypeScript takes their types from the installed package through
 * the `declare module` shim in vendor.d.ts. Every view imports lit from here, never by URL itself.
 *
 * lit-html escapes every value put into text or attributes; `unsafeHTML` is never to be used on data.
 */
export { html, nothing, render, type TemplateResult } from './vendor/lit-html/lit-html.js';
export { guard } from './vendor/lit-html/directives/guard.js';
export { live } from './vendor/lit-html/directives/live.js';
export { repeat } from './vendor/lit-html/directives/repeat.js';
