/** `type: postgresql`: holds as rows of one table, fencing tokens from a counter row per lock. */
import type { BackendPlugin } from "../registry";
import { PostgresBackend } from "./backend";
import { parsePostgresSettings } from "./settings";

export const postgresqlPlugin: BackendPlugin = {
  type: "postgresql",
  required: [["url", (v) => typeof v === "string" && /^postgres(ql)?:\/\//.test(v), "a postgres:// URL"]],
  validateSettings: (name, settings) => void parsePostgresSettings(name, settings),
  factory: ({ name, settings }) => new PostgresBackend(name, parsePostgresSettings(name, settings)),
};
