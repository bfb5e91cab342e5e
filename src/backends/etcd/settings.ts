/** The `etcd:` settings block: checked, its files read, before anything connects. */
import { SettingsCheck } from "../kit/settings";
import type { EtcdBackendOptions } from "./backend";

export const DEFAULT_PREFIX = "/kubelock";
export const DEFAULT_TIMEOUT_MS = 2000;

const shorten = (text: string) => (text.length > 100 ? `${text.slice(0, 100)}…` : text);

/** Checks the `etcd:` settings block and reads its files; every mistake is one line of the BackendConfigError. */
export function parseEtcdSettings(name: string, raw: Record<string, unknown>): EtcdBackendOptions {
  const check = new SettingsCheck("etcd");
  const { endpoints, prefix = DEFAULT_PREFIX, username, passwordFile, tls, dialTimeoutMs = DEFAULT_TIMEOUT_MS, requestTimeoutMs = DEFAULT_TIMEOUT_MS, ...unknown } = raw;
  check.unknown(unknown);
  const protocols = new Set<string>();
  if (!Array.isArray(endpoints) || endpoints.length === 0) check.problem("etcd.endpoints is required: a non-empty list of http:// or https:// URLs");
  else for (const endpoint of endpoints) {
    const url = typeof endpoint === "string" && URL.canParse(endpoint) ? new URL(endpoint) : undefined;
    if (typeof endpoint !== "string") check.problem("etcd.endpoints: every endpoint must be a string (an http:// or https:// URL)");
    else if (!url || !["http:", "https:"].includes(url.protocol) || !url.hostname) {
      check.problem(`etcd.endpoints: "${shorten(endpoint.replace(/^([a-z][a-z0-9+.-]*:\/\/)?.*@/is, "$1***@"))}" is not an http:// or https:// URL`);
    } else if (url.username || url.password) check.problem("etcd.endpoints: URLs must not carry credentials; use etcd.username and etcd.passwordFile");
    // Only scheme, host and port are shown: a path or query may carry a token.
    else if (url.pathname !== "/" || url.search) check.problem(`etcd.endpoints: "${shorten(`${url.protocol}//${url.host}`)}/…" must be scheme://host:port, without a path or query`);
    else protocols.add(url.protocol);
  }
  if (protocols.size > 1) check.problem("etcd.endpoints mix http:// and https://; use one scheme");
  if (typeof prefix !== "string" || !/^\/?[^\s/]\S*$/.test(prefix)) check.problem("etcd.prefix must be a non-empty key prefix without spaces, such as /kubelock");
  check.milliseconds("dialTimeoutMs", dialTimeoutMs);
  check.milliseconds("requestTimeoutMs", requestTimeoutMs);
  let auth: EtcdBackendOptions["auth"];
  if (username !== undefined || passwordFile !== undefined) {
    if (typeof username !== "string" || !username) check.problem("etcd.username must be a non-empty string (it goes with etcd.passwordFile)");
    if (passwordFile === undefined) check.problem("etcd.passwordFile is required with etcd.username");
    else {
      const password = check.secret("passwordFile", passwordFile);
      if (password && typeof username === "string") auth = { username, password, passwordFile: passwordFile as string };
    }
  }
  let tlsOptions: EtcdBackendOptions["tls"];
  if (tls !== undefined) {
    const files = check.tls(tls);
    if (files) {
      if (protocols.has("http:")) check.problem("etcd.tls needs https:// endpoints");
      tlsOptions = { ca: files.ca, cert: files.cert, key: files.key, files: files.files };
    }
  }
  check.done(name);
  return {
    name, endpoints: endpoints as string[], prefix: prefix as string, auth, tls: tlsOptions,
    dialTimeoutMs: dialTimeoutMs as number, requestTimeoutMs: requestTimeoutMs as number,
  };
}
