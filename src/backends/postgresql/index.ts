/**
 * `type: postgresql`: holds as rows of one table, fencing tokens from a counter row per lock. The client library
 * is imported only when such a backend is built, so operators without one never load it.
 */
import type { BackendPlugin } from "../registry";
import { parsePostgresSettings } from "./settings";

export const postgresqlPlugin: BackendPlugin = {
  type: "postgresql",
  required: [["url", (v) => typeof v === "string" && /^postgres(ql)?:\/\//.test(v), "a postgres:// URL"]],
  validateSettings: (name, settings) => void parsePostgresSettings(name, settings),
  factory: async ({ name, settings }) => {
    const options = parsePostgresSettings(name, settings);
    const { PostgresBackend } = await import("./backend");
    return new PostgresBackend(name, options);
  },
};
