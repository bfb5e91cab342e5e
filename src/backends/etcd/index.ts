/**
 * `type: etcd`: holds as leased keys under a prefix, fencing tokens from the keys' create revisions. The client
 * library (gRPC) is imported only when such a backend is built, so operators without one never load it.
 */
import type { BackendPlugin } from "../registry";
import { parseEtcdSettings } from "./settings";

export const etcdPlugin: BackendPlugin = {
  type: "etcd",
  required: [["endpoints", (v) => Array.isArray(v) && v.length > 0 && v.every((e) => typeof e === "string" && /^https?:\/\//.test(e)), "a non-empty list of http(s):// URLs"]],
  validateSettings: (name, settings) => void parseEtcdSettings(name, settings),
  factory: async ({ name, settings }) => {
    const options = parseEtcdSettings(name, settings);
    const { EtcdBackend } = await import("./backend");
    return new EtcdBackend(options);
  },
};
