/** `type: etcd`: holds as leased keys under a prefix, fencing tokens from the keys' create revisions. */
import type { BackendPlugin } from "../registry";
import { EtcdBackend } from "./backend";
import { parseEtcdSettings } from "./settings";

export const etcdPlugin: BackendPlugin = {
  type: "etcd",
  required: [["endpoints", (v) => Array.isArray(v) && v.length > 0 && v.every((e) => typeof e === "string" && /^https?:\/\//.test(e)), "a non-empty list of http(s):// URLs"]],
  validateSettings: (name, settings) => void parseEtcdSettings(name, settings),
  factory: ({ name, settings }) => new EtcdBackend(parseEtcdSettings(name, settings)),
};
