/**
 * What grows with the number of locks: section 4's figures of two results files (this run's and the
 * 100,000-lock run's), read back from their "4. Scale" tables, side by side with how each grew against N.
 */

/** One figure of section 4: the row label it starts with and how to read its number from the value. */
const FIGURES: { name: string; row: RegExp; value: RegExp; unit: string }[] = [
  { name: "start → caches synced", row: /^operator start → caches synced/, value: /^([\d.]+) s/, unit: "s" },
  { name: "start → every claim Granted", row: /^operator start → all \d+ claims/, value: /^([\d.]+) s/, unit: "s" },
  { name: "operator CPU until converged", row: /^operator CPU until converged/, value: /^([\d.]+) s/, unit: "s" },
  { name: "restart → ready (every hold renewed once)", row: /^restart with/, value: /^([\d.]+) s/, unit: "s" },
  { name: "peak RSS", row: /^operator peak RSS/, value: /^([\d.]+) MiB/, unit: "MiB" },
  { name: "JavaScript heap live after full collections", row: /^JavaScript heap/, value: /^at most ([\d.]+) MiB live/, unit: "MiB" },
  { name: "operator CPU while idle", row: /^operator CPU while idle/, value: /= ([\d.]+)% of one core/, unit: "% of a core" },
  { name: "Redis script calls while idle", row: /^Redis script calls/, value: /^([\d.]+)\/s/, unit: "/s" },
];

export interface ScaleRun {
  n: number;
  leaseSeconds: number;
  figures: Map<string, number>;
}

/** Section 4 of a results file, or undefined when it has none. */
export function readScaleRun(markdown: string): ScaleRun | undefined {
  const section = markdown.split(/^## /m).find((s) => s.startsWith("4. Scale"));
  const shape = section && /(\d+) DistributedLocks \(backend \w+, maxHolders 1, leaseDurationSeconds (\d+)\)/.exec(section);
  if (!section || !shape) return undefined;
  const figures = new Map<string, number>();
  for (const line of section.split("\n")) {
    const [label, value] = line.split(" | ").map((cell) => cell.replace(/^\| ?| ?\|$/g, ""));
    const figure = value === undefined ? undefined : FIGURES.find((f) => f.row.test(label));
    const number = figure && figure.value.exec(value)?.[1];
    if (figure && number !== undefined) figures.set(figure.name, Number(number));
  }
  return { n: Number(shape[1]), leaseSeconds: Number(shape[2]), figures };
}

/**
 * Rows: each figure at both sizes, how much it grew, and its growth exponent k in figure ∝ N^k (1: linear,
 * below: slower, above: faster). Idle figures follow the renewals a second (N ÷ a third of the lease), which
 * the two runs may set apart from N: they are compared per renewal a second instead, where flat is linear.
 */
export function growthRows(small: ScaleRun, large: ScaleRun): string[][] {
  const renewals = (run: ScaleRun) => run.n / (run.leaseSeconds / 3);
  const rows: string[][] = [];
  for (const { name, unit } of FIGURES) {
    const a = small.figures.get(name);
    const b = large.figures.get(name);
    if (a === undefined || b === undefined || a <= 0 || b <= 0) continue;
    const idle = name.endsWith("while idle");
    const growth = idle
      ? `${(b / renewals(large) / (a / renewals(small))).toFixed(2)}× per renewal a second`
      : `k = ${(Math.log(b / a) / Math.log(large.n / small.n)).toFixed(2)}`;
    const show = (x: number) => `${x}${unit.startsWith("/") ? "" : " "}${unit}`;
    rows.push([name, show(a), show(b), `${(b / a).toFixed(1)}×`, growth]);
  }
  return rows;
}
