/**
 * Durations as kubectl writes them (Go's time.ParseDuration, restricted to the units that make sense
 * for locks): one or more `<number><unit>` parts, unit `h`, `m`, `s` or `ms`, e.g. `30s`, `5m`, `1h`,
 * `1h30m`, `1.5s`, `500ms`. A bare number is refused: `30` could mean seconds or milliseconds.
 */

const UNIT_MS: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1 };
const PART = /(\d+(?:\.\d+)?|\.\d+)(ms|h|m|s)/y;

export class DurationError extends Error {}

/** Parses `text` into milliseconds; throws DurationError with a message fit for a user. */
export function parseDuration(text: string, flag?: string): number {
  const what = flag ? `${flag} "${text}"` : `"${text}"`;
  const hint = "use a number with a unit, like 30s, 5m, 1h or 1h30m";
  const trimmed = text.trim();
  if (trimmed === "") throw new DurationError(`${what} is not a duration: ${hint}`);
  if (trimmed.startsWith("-")) throw new DurationError(`${what} is negative: ${hint}`);
  if (/^\d+(\.\d+)?$/.test(trimmed)) throw new DurationError(`${what} has no unit: ${hint}`);
  let total = 0;
  PART.lastIndex = 0;
  let at = 0;
  while (at < trimmed.length) {
    PART.lastIndex = at;
    const match = PART.exec(trimmed);
    if (!match) throw new DurationError(`${what} is not a duration: ${hint}`);
    total += Number(match[1]) * UNIT_MS[match[2]];
    at = PART.lastIndex;
  }
  if (!Number.isFinite(total) || total > Number.MAX_SAFE_INTEGER) throw new DurationError(`${what} is too long`);
  return Math.round(total);
}

/** Parses a duration that must be a whole number of seconds, at least 1s (for `*Seconds` fields). */
export function parseSeconds(text: string, flag?: string): number {
  const ms = parseDuration(text, flag);
  if (ms < 1000 || ms % 1000 !== 0) {
    throw new DurationError(`${flag ? `${flag} "${text}"` : `"${text}"`} must be a whole number of seconds, at least 1s`);
  }
  return ms / 1000;
}

/** Writes milliseconds back the way they are parsed: `30s`, `1m30s`, `1h`, `1.5s`, `250ms`. */
export function formatDuration(ms: number): string {
  if (ms <= 0) return "0s";
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const hours = Math.floor(ms / 3_600_000);
  const minutes = Math.floor((ms % 3_600_000) / 60_000);
  const seconds = (ms % 60_000) / 1000;
  let out = "";
  if (hours) out += `${hours}h`;
  if (minutes) out += `${minutes}m`;
  if (seconds) out += `${Number.isInteger(seconds) ? seconds : Number(seconds.toFixed(3))}s`;
  return out;
}

/** An age as kubectl prints it: `45s`, `3m20s`, `12m`, `2h5m`, `20h`, `3d4h`, `40d`. */
export function formatAge(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 10) return s % 60 ? `${m}m${s % 60}s` : `${m}m`;
  if (m < 180) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 8) return m % 60 ? `${h}h${m % 60}m` : `${h}h`;
  if (h < 48) return `${h}h`;
  const d = Math.floor(h / 24);
  if (d < 8) return h % 24 ? `${d}d${h % 24}h` : `${d}d`;
  return `${d}d`;
}
