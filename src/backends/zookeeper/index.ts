/**
 * `type: zookeeper`: holds as ephemeral sequential nodes of the operator's session. The client is a native
 * addon, so backend.ts is imported only when a zookeeper backend is built: operators that do not use one
 * never load it (settings are checked without it).
 */
import { JITTER_FACTOR } from "../../runtime/leaderelection";
import { BackendConfigError } from "../backend";
import type { BackendPlugin } from "../registry";
import { DEFAULT_SESSION_SECRET, SecretSessionStore, sessionKey } from "./session";
import { DEFAULT_SESSION_TIMEOUT_MS, parseZooKeeperSettings } from "./settings";

export const zookeeperPlugin: BackendPlugin = {
  type: "zookeeper",
  required: [["connect", (v) => typeof v === "string" && /^[^,\s]+:\d+(,[^,\s]+:\d+)*$/.test(v), "a host:port list separated by commas"]],
  validateSettings: (name, settings) => void parseZooKeeperSettings(name, settings),
  /**
   * With leader election (`handover`), the session is handed from leader to leader through key `sessionKey(...)`
   * of Secret `sessionSecret` in the operator's own namespace.
   */
  factory: async ({ name, settings, kubeConfig, handover, log }) => {
    const options = parseZooKeeperSettings(name, settings);
    const { ZooKeeperBackend } = await import("./backend");
    if (!handover) return new ZooKeeperBackend({ ...options, log });
    const timeoutMs = options.sessionTimeoutMs ?? DEFAULT_SESSION_TIMEOUT_MS;
    if (timeoutMs <= handover.failoverMs) {
      // Refused rather than run: every hold would be lost at the first leader crash, silently.
      const minimum = Math.ceil(handover.failoverMs / 1000) * 1000;
      throw new BackendConfigError(`backend "${name}": zookeeper.sessionTimeoutMs ${timeoutMs} is not longer than a leader failover `
        + `(${Math.round(handover.failoverMs)} ms: the leader election's lease plus ${JITTER_FACTOR + 1} retry periods), so a crashed leader's `
        + `holds would expire before the next leader resumes its session; set sessionTimeoutMs to at least ${minimum}, `
        + "or shorten --leader-elect-lease-duration / --leader-elect-retry-period");
    }
    const store = new SecretSessionStore(kubeConfig, handover.namespace, options.sessionSecret ?? DEFAULT_SESSION_SECRET, sessionKey(handover.election, name));
    return new ZooKeeperBackend({ ...options, handover: store, log: log ?? handover.log });
  },
};
