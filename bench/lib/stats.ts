/** Small statistics and formatting helpers shared by the benchmarks. */

/** The q-quantile (0..1) of `values` by the nearest-rank method; NaN for none. */
export function quantile(values: number[], q: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil(q * sorted.length)));
  return sorted[rank - 1];
}

/** The median (mean of the two middle values for an even count); NaN for none. */
export function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** One run of a measurement: a rate and the latency samples it was made of. */
export interface RunResult {
  /** Operations (or grants) per second. */
  rate: number;
  /** Latencies in ms. */
  latencies: number[];
  /** CPU time of this process (every thread) per operation, in µs, where measured. */
  cpuMicros?: number;
}

/** What a table shows for one subject: medians over runs of the per-run rate, p50 and p99. */
export interface Summary {
  runs: number;
  rate: number;
  p50: number;
  p99: number;
  /** Every run's rate, to show the spread. */
  rates: number[];
  /** Median CPU µs per operation, where the runs measured it. */
  cpuMicros?: number;
}

export function summarize(runs: RunResult[]): Summary {
  return {
    runs: runs.length,
    rate: median(runs.map((r) => r.rate)),
    p50: median(runs.map((r) => quantile(r.latencies, 0.5))),
    p99: median(runs.map((r) => quantile(r.latencies, 0.99))),
    rates: runs.map((r) => r.rate),
    cpuMicros: runs.every((r) => r.cpuMicros !== undefined) ? median(runs.map((r) => r.cpuMicros!)) : undefined,
  };
}

/** Milliseconds since an arbitrary origin, sub-millisecond resolution. */
export const now = (): number => performance.now();

export function fmt(value: number, digits?: number): string {
  if (!Number.isFinite(value)) return "–";
  const d = digits ?? (Math.abs(value) >= 100 ? 0 : Math.abs(value) >= 10 ? 1 : 2);
  return value.toFixed(d);
}

/** `a / b` as "1.23×". */
export function ratio(a: number, b: number): string {
  return Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? `${(a / b).toFixed(2)}×` : "–";
}

export function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name} must be a positive integer, got "${raw}"`);
  return value;
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
