/**
 * Browser defences on every response of the REST port (helmet): the dashboard holds an API key that can deploy to
 * Production, so a page of ours must not run script from anywhere else, be framed by another site, have its
 * responses sniffed into another type, or be reached over plain HTTP once visited.
 * - Content-Security-Policy: script only from this origin, and never inline (the dashboard is one module file);
 *   nothing may frame it (`frame-ancestors 'none'`, and X-Frame-Options DENY for older browsers).
 * - The OpenAPI page (/api/docs) is Swagger UI, which styles itself inline: it alone may use inline styles and
 *   data: images. Its scripts are files, so script stays 'self' there too.
 * - Strict-Transport-Security for a year (the port only speaks HTTPS), X-Content-Type-Options nosniff,
 *   Referrer-Policy no-referrer, and helmet's other defaults.
 */
import type { NextFunction, Request, Response } from 'express';
import helmet from 'helmet';

const directives = {
  defaultSrc: ["'self'"],
  scriptSrc: ["'self'"],
  styleSrc: ["'self'"],
  imgSrc: ["'self'"],
  fontSrc: ["'self'"],
  connectSrc: ["'self'"],
  objectSrc: ["'none'"],
  baseUri: ["'self'"],
  formAction: ["'self'"],
  frameAncestors: ["'none'"],
};

export function securityHeaders() {
  const common = {
    hsts: { maxAge: 365 * 24 * 3600, includeSubDomains: false },
    xFrameOptions: { action: 'deny' as const },
    referrerPolicy: { policy: 'no-referrer' as const },
  };
  const strict = helmet({ ...common, contentSecurityPolicy: { useDefaults: false, directives } });
  const docs = helmet({
    ...common,
    contentSecurityPolicy: {
      useDefaults: false,
      directives: { ...directives, styleSrc: ["'self'", "'unsafe-inline'"], imgSrc: ["'self'", 'data:'] },
    },
  });
  return (req: Request, res: Response, next: NextFunction) =>
    (req.path.startsWith('/api/docs') ? docs : strict)(req, res, next);
}
