/** The `kubernetes:` settings block (`requestTimeoutMs`). */
import { SettingsCheck } from "../kit/settings";

export interface KubernetesSettings {
  requestTimeoutMs?: number;
}

/** Checks the block; every mistake is one line of the thrown BackendConfigError. */
export function parseKubernetesSettings(name: string, raw: Record<string, unknown>): KubernetesSettings {
  const check = new SettingsCheck("kubernetes");
  const { requestTimeoutMs, ...unknown } = raw;
  check.unknown(unknown);
  if (requestTimeoutMs !== undefined) check.milliseconds("requestTimeoutMs", requestTimeoutMs);
  check.done(name);
  return { requestTimeoutMs: requestTimeoutMs as number | undefined };
}
