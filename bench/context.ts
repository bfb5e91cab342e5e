/** What every benchmark gets from bench/run.ts. */
import type { KubeConfig } from "@kubernetes/client-node";
import type { Report } from "./lib/report";

export interface BenchContext {
  /** The environment's addresses (KUBECONFIG, KUBELOCK_TEST_*), also copied into process.env. */
  variables: Record<string, string>;
  kubeConfig: KubeConfig;
  /** Runs per figure (BENCH_RUNS); each figure is the median over runs. */
  runs: number;
  report: Report;
  log: (line: string) => void;
  /** One line per target for the summary at the top of RESULTS.md. */
  targets: { target: string; measured: string; met: boolean }[];
  /** Bottlenecks and observations, with the measured evidence, for the summary at the top. */
  findings: string[];
}
