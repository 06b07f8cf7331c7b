/**
 * Structured logs for the server and the agent, one winston factory: JSON (one object a line, for log shippers) or
 * pretty (for a terminal), always to stderr (stdout carries the lines scripts wait for, like the server's
 * "listening" line). Components take a child logger with their `context` (or `agent`) instead of repeating it.
 */
import winston from 'winston';

export type LogFormat = 'json' | 'pretty';

export function createLogger(o: {
  level: string;
  format: LogFormat;
  defaultMeta?: Record<string, unknown>;
}): winston.Logger {
  const fmt =
    o.format === 'json'
      ? winston.format.combine(
          winston.format.timestamp(),
          winston.format.errors({ stack: true }),
          winston.format.json(),
        )
      : winston.format.combine(
          winston.format.timestamp({ format: 'HH:mm:ss.SSS' }),
          winston.format.errors({ stack: true }),
          winston.format.printf(({ timestamp, level, message, context, stack, ...rest }) => {
            const extra = Object.keys(rest).length ? ' ' + JSON.stringify(rest) : '';
            return `${timestamp} ${level.padEnd(5)} ${context ? `[${String(context)}] ` : ''}${String(message)}${extra}${stack ? `\n${String(stack)}` : ''}`;
          }),
        );
  return winston.createLogger({
    level: o.level,
    format: fmt,
    defaultMeta: o.defaultMeta,
    transports: [new winston.transports.Console({ stderrLevels: ['error', 'warn', 'info', 'debug', 'verbose'] })],
  });
}

/** JSON unless stderr is a terminal, or as CUTTLE_LOG_FORMAT says. */
export function formatFromEnv(env: NodeJS.ProcessEnv = process.env): LogFormat {
  if (env.CUTTLE_LOG_FORMAT === 'json' || env.CUTTLE_LOG_FORMAT === 'pretty') return env.CUTTLE_LOG_FORMAT;
  return process.stderr.isTTY ? 'pretty' : 'json';
}
