import winston from 'winston';

/** The agent's own log (not the deployment log): structured, to stderr, JSON when not on a terminal. */
export function createAgentLogger(level = process.env.CUTTLE_LOG_LEVEL ?? 'info', name?: string): winston.Logger {
  const json = process.env.CUTTLE_LOG_FORMAT === 'json' || (!process.stderr.isTTY && process.env.CUTTLE_LOG_FORMAT !== 'pretty');
  const fmt = json
    ? winston.format.combine(winston.format.timestamp(), winston.format.json())
    : winston.format.combine(
        winston.format.timestamp({ format: 'HH:mm:ss.SSS' }),
        winston.format.printf(({ timestamp, level, message, ...rest }) => `${timestamp} ${level.padEnd(5)} ${message}${Object.keys(rest).length ? ' ' + JSON.stringify(rest) : ''}`),
      );
  return winston.createLogger({
    level,
    format: fmt,
    defaultMeta: name ? { agent: name } : undefined,
    transports: [new winston.transports.Console({ stderrLevels: ['error', 'warn', 'info', 'debug', 'verbose'] })],
  });
}
export type AgentLogger = winston.Logger;
