import type winston from 'winston';
import { createLogger, formatFromEnv } from '#shared/logging.js';

/** The agent's own log (not the deployment log): see shared/src/logging.ts; each agent's lines carry its name. */
export function createAgentLogger(level = process.env.CUTTLE_LOG_LEVEL ?? 'info', name?: string): winston.Logger {
  return createLogger({ level, format: formatFromEnv(), defaultMeta: name ? { agent: name } : undefined });
}
export type AgentLogger = winston.Logger;
