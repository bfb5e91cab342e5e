/** The `postgresql:` settings block: checked, its files read, before anything connects. */
import { SettingsCheck } from "../kit/settings";
import type { PostgresSettings } from "./backend";

const DEFAULT_TABLE = "kubelock_holds";
const DEFAULT_TIMEOUT_MS = 2000;

/** Checks the block; every mistake is one line of the thrown BackendConfigError. */
export function parsePostgresSettings(name: string, raw: Record<string, unknown>): PostgresSettings {
  const check = new SettingsCheck("postgresql");
  const { url, passwordFile, table = DEFAULT_TABLE, requestTimeoutMs = DEFAULT_TIMEOUT_MS, tls, ...unknown } = raw;
  check.unknown(unknown);
  const parsed = typeof url === "string" && URL.canParse(url) ? new URL(url) : undefined;
  if (!parsed || !["postgres:", "postgresql:"].includes(parsed.protocol) || !parsed.hostname) {
    check.problem("postgresql.url is required: postgres://user@host:port/database");
  } else if (parsed.password) check.problem("postgresql.url must not carry a password; use postgresql.passwordFile");
  if (typeof table !== "string" || !/^[a-z_][a-z0-9_]{0,50}$/.test(table)) check.problem("postgresql.table must be a lower-case SQL identifier (letters, digits, _), such as kubelock_holds");
  check.milliseconds("requestTimeoutMs", requestTimeoutMs);
  const password = passwordFile === undefined ? undefined : check.secret("passwordFile", passwordFile);
  let ssl: PostgresSettings["ssl"];
  let sslFiles: PostgresSettings["sslFiles"];
  if (tls !== undefined) {
    const read = check.tls(tls, { allowInsecure: true });
    if (read) {
      const { files, ...material } = read;
      [ssl, sslFiles] = [material, files];
    }
  }
  check.done(name);
  return { url: url as string, password, passwordFile: password === undefined ? undefined : (passwordFile as string), table: table as string, requestTimeoutMs: requestTimeoutMs as number, ssl, sslFiles };
}
