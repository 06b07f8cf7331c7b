/** Structured logging with winston; Nest's own messages go through the same logger. */
import type { LoggerService } from '@nestjs/common';
import winston from 'winston';

export function createLogger(level: string, format: 'json' | 'pretty'): winston.Logger {
  const fmt =
    format === 'json'
      ? winston.format.combine(winston.format.timestamp(), winston.format.errors({ stack: true }), winston.format.json())
      : winston.format.combine(
          winston.format.timestamp({ format: 'HH:mm:ss.SSS' }),
          winston.format.errors({ stack: true }),
          winston.format.printf(({ timestamp, level, message, context, stack, ...rest }) => {
            const extra = Object.keys(rest).length ? ' ' + JSON.stringify(rest) : '';
            return `${timestamp} ${level.padEnd(5)} ${context ? `[${context}] ` : ''}${message}${extra}${stack ? `\n${stack}` : ''}`;
          }),
        );
  // Logs go to stderr: stdout carries the one "listening" line that scripts wait for.
  return winston.createLogger({ level, format: fmt, transports: [new winston.transports.Console({ stderrLevels: ['error', 'warn', 'info', 'debug', 'verbose'] })] });
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
