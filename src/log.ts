/**
 * Structured logs: one JSON object per line on stderr, like controller-runtime's zap logger.
 * Never pass secrets (passwords, tokens, key material) as fields.
 */
export type Level = "debug" | "info" | "error";

export interface Logger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
  with(fields: Record<string, unknown>): Logger;
}

const rank: Record<Level, number> = { debug: 0, info: 1, error: 2 };

export function createLogger(level: Level = "info", base: Record<string, unknown> = {}, write = (line: string) => process.stderr.write(line + "\n")): Logger {
  const emit = (at: Level, message: string, fields?: Record<string, unknown>) => {
    if (rank[at] < rank[level]) return;
    write(JSON.stringify({ ts: new Date().toISOString(), level: at, msg: message, ...base, ...fields }));
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    error: (m, f) => emit("error", m, f),
    with: (fields) => createLogger(level, { ...base, ...fields }, write),
  };
}

export const silentLogger: Logger = { debug() {}, info() {}, error() {}, with: () => silentLogger };
