/**
 * `npm run server`: validates configuration, prepares the data folder (PKI, embedded database when DATABASE_URL is
 * unset), starts the REST API and dashboard on CUTTLE_PORT and the agent port on CUTTLE_AGENT_PORT, and prints
 * `cuttle server listening on https://HOST:PORT` once both accept connections. SIGTERM/SIGINT stop it cleanly.
 */
import 'reflect-metadata';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ValidationPipe } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import type { NestExpressApplication } from '@nestjs/platform-express';
import type { Express } from 'express';
import { AppModule } from './app.module.js';
import { AuditRecorder } from './audit/audit.recorder.js';
import { ApiKeysService } from './auth/api-keys.service.js';
import { InputBoundsPipe } from './common/input-bounds.js';
import { finishDocument } from './common/openapi.js';
import { ConfigError, loadConfig } from './config/config.js';
import { EMBEDDED_POOL_SIZE, POOL_SIZE } from './database/data-source.js';
import { startEmbeddedDatabase, type EmbeddedDatabase } from './database/embedded.js';
import { createLogger, NestWinstonLogger } from './logging/logger.js';
import { ensurePki, serverChain } from './pki/pki.js';
import { useKeyForMigrations } from './secrets/migration-key.js';
import { confirmSecretsKey, prepareSecretsKey, SecretsKeyError } from './secrets/secrets-key.js';
import { securityHeaders } from './common/security-headers.js';

async function main() {
  let config;
  try {
    config = loadConfig();
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(`cuttle server: ${e.message}`);
      process.exit(2);
    }
    throw e;
  }
  const logger = createLogger(config.logLevel, config.logFormat);
  mkdirSync(config.home, { recursive: true, mode: 0o700 });
  const pki = ensurePki(config.home, config.publicHosts, config.host);

  let embedded: EmbeddedDatabase | undefined;
  let databaseUrl = config.databaseUrl;
  if (!databaseUrl) {
    embedded = await startEmbeddedDatabase(config.home, EMBEDDED_POOL_SIZE);
    databaseUrl = embedded.url;
    logger.info(`embedded database in ${config.home}/db (fsync off: use PostgreSQL via DATABASE_URL in production)`, {
      context: 'database',
    });
  }

  // The secrets key before migrations (they may encrypt with it), checked against the database; the check row after.
  let secrets;
  try {
    secrets = await prepareSecretsKey({ home: config.home, envKey: config.secretsKey, databaseUrl, create: true });
  } catch (e) {
    if (e instanceof SecretsKeyError) await refuse(e, embedded);
    throw e;
  }
  if (!secrets) throw new Error('no secrets key'); // `create: true` always yields one
  if (secrets.createdFile) logger.info(`made a new secrets key in ${secrets.createdFile}`, { context: 'secrets' });
  useKeyForMigrations(secrets.box);

  const app = await NestFactory.create<NestExpressApplication>(
    AppModule.forRoot({
      config,
      pki,
      logger,
      databaseUrl,
      poolSize: embedded ? EMBEDDED_POOL_SIZE : POOL_SIZE,
      secrets: secrets.box,
    }),
    {
      httpsOptions: { key: pki.serverKey, cert: serverChain(pki) },
      logger: new NestWinstonLogger(logger),
      bodyParser: false,
    },
  );
  app.use(securityHeaders());
  // Before the body parser: a request refused for its body is audited too.
  app.use(app.get(AuditRecorder).middleware);
  app.useBodyParser('json', { limit: '5mb' });
  // The dashboard: static page and styles from dashboard/public, its compiled modules from dist/dashboard.
  const root = fileURLToPath(new URL('../../..', import.meta.url));
  app.useStaticAssets(join(root, 'dashboard', 'public'), { index: 'index.html' });
  app.useStaticAssets(join(root, 'dist', 'dashboard'), { prefix: '/assets/' });
  // Its rendering library's ES modules as published (no bundler; dashboard/src/lit.ts says why).
  app.useStaticAssets(join(root, 'node_modules', 'lit-html'), { prefix: '/assets/vendor/lit-html/' });
  // The API's client error, shared with the CLI; that one file only (it imports nothing at run time).
  const apiErrorModule = join(root, 'dist', 'shared', 'src', 'api', 'api-error.js');
  (app.getHttpAdapter().getInstance() as Express).get('/assets/shared/api/api-error.js', (_req, res) =>
    res.type('text/javascript').sendFile(apiErrorModule),
  );
  // Bounds first (depth, sizes, NUL): the ValidationPipe's transformation would overflow or stall on such input.
  app.useGlobalPipes(
    new InputBoundsPipe(),
    new ValidationPipe({ whitelist: true, forbidNonWhitelisted: true, transform: true }),
  );
  try {
    await confirmSecretsKey(secrets, databaseUrl, config.home);
  } catch (e) {
    if (e instanceof SecretsKeyError) {
      await app.close();
      await refuse(e, embedded);
    }
    throw e;
  }
  await app.get(ApiKeysService).ensureAdminKey();

  // The REST API described from the code, for people at /api/docs and as JSON at /api/docs-json (no key needed).
  const openapi = finishDocument(
    SwaggerModule.createDocument(
      app,
      new DocumentBuilder()
        .setTitle('Cuttle')
        .setDescription(
          'Deployment orchestrator: environments, machines, projects and their deployment process, packages, releases, deployments, interruptions. Send X-Api-Key on every call except agent registration and health.',
        )
        .setVersion(config.version)
        .setLicense('MIT', 'https://opensource.org/license/mit')
        .addServer('/', 'this server')
        .addApiKey({ type: 'apiKey', in: 'header', name: 'X-Api-Key' }, 'apiKey')
        .addSecurityRequirements('apiKey')
        .build(),
    ),
  );
  SwaggerModule.setup('api/docs', app, openapi, { jsonDocumentUrl: 'api/docs-json', customSiteTitle: 'Cuttle API' });

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info(`${signal} received, stopping`, { context: 'server' });
    const force = setTimeout(() => process.exit(1), 10_000);
    force.unref();
    try {
      await app.close();
      await embedded?.close();
    } finally {
      process.exit(0);
    }
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));

  // An idle client connection must be closed by the client, not under it: Node's clients drop idle sockets after 5 s,
  // as Node's servers do by default, and a request sent on a socket the server is closing at that instant fails with
  // "socket hang up". The REST port keeps idle connections for longer than clients do (load balancers' usual 60 s).
  const http = app.getHttpServer() as import('node:https').Server;
  http.keepAliveTimeout = REST_KEEP_ALIVE_MS;
  http.headersTimeout = REST_KEEP_ALIVE_MS + 1_000;
  await app.listen(config.port, config.host);
  console.log(
    `cuttle server listening on https://${config.host.includes(':') ? `[${config.host}]` : config.host}:${config.port}`,
  );
}

/** A wrong or missing secrets key: nothing listens, the message names CUTTLE_SECRETS_KEY, exit code 2 as for config. */
async function refuse(e: Error, embedded: EmbeddedDatabase | undefined): Promise<never> {
  console.error(`cuttle server: ${e.message}`);
  await embedded?.close();
  process.exit(2);
}

/** How long the REST port keeps an idle keep-alive connection (see main). */
const REST_KEEP_ALIVE_MS = 65_000;

main().catch((e) => {
  console.error(`cuttle server failed to start: ${(e as Error).message}`);
  if (process.env.CUTTLE_LOG_LEVEL === 'debug') console.error(e);
  process.exit(1);
});
