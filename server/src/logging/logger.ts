/** Structured logging with winston; Nest's own messages go through the same logger. */
import type { LoggerService } from '@nestjs/common';
import type winston from 'winston';
import { createLogger as createSharedLogger, type LogFormat } from '#shared/logging.js';

/** The server's logger (see shared/src/logging.ts). */
export function createLogger(level: string, format: LogFormat): winston.Logger {
  return createSharedLogger({ level, format });
}

export class NestWinstonLogger implements LoggerService {
  constructor(private readonly logger: winston.Logger) {}
  // Nest's own "log" messages (modules loaded, routes mapped) are start-up detail: debug, not info.
  log(message: unknown, context?: string) {
    this.logger.debug(String(message), { context });
  }
  error(message: unknown, trace?: string, context?: string) {
    this.logger.error(String(message), { context, ...(trace ? { trace } : {}) });
  }
  warn(message: unknown, context?: string) {
    this.logger.warn(String(message), { context });
  }
  debug(message: unknown, context?: string) {
    this.logger.debug(String(message), { context });
  }
  verbose(message: unknown, context?: string) {
    this.logger.debug(String(message), { context });
  }
}

export const LOGGER = Symbol('Logger');
export type Logger = winston.Logger;
