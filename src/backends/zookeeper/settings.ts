/** The `zookeeper:` settings block: checked, its files read, before anything connects (no native addon needed). */
import { existsSync } from "node:fs";
import { dirname } from "node:path";
import { SettingsCheck } from "../kit/settings";
import type { ZooKeeperBackendOptions } from "./backend";
import { DEFAULT_SESSION_SECRET } from "./session";

export const DEFAULT_SESSION_TIMEOUT_MS = 30_000;
export const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;
export const DEFAULT_ROOT = "/kubelock";
/** Digest credentials as authFile holds them: `user:password` (the user without ':'). */
export const DIGEST_CREDENTIALS = /^[^:\s]+:.+$/;

/**
 * Checks the `zookeeper:` settings block and reads authFile (its path is kept too: the backend reads it again, so a
 * rotated Secret is used without a restart); every mistake is one line of the BackendConfigError.
 */
export function parseZooKeeperSettings(name: string, raw: Record<string, unknown>): ZooKeeperBackendOptions {
  const check = new SettingsCheck("zookeeper");
  const {
    connect, sessionTimeoutMs = DEFAULT_SESSION_TIMEOUT_MS, rootPath = DEFAULT_ROOT, authFile, sessionFile, sessionSecret = DEFAULT_SESSION_SECRET,
    requestTimeoutMs = DEFAULT_REQUEST_TIMEOUT_MS, ...unknown
  } = raw;
  check.unknown(unknown);
  if (typeof connect !== "string" || !connect) check.problem('zookeeper.connect is required ("host:port,host:port")');
  else {
    // The bad item is named by its place, not echoed: it may hold digest credentials (user:password@host).
    const items = connect.split(",");
    const bad = items.findIndex((hp) => !/^[^\s:/,@]+:\d{1,5}$/.test(hp) || Number(hp.split(":")[1]) > 65535 || Number(hp.split(":")[1]) < 1);
    if (bad >= 0) {
      const hint = items[bad].includes("@") ? "; credentials go in zookeeper.authFile" : "";
      check.problem(`zookeeper.connect item ${bad + 1} of ${items.length} must be host:port with a port from 1 to 65535 (no chroot: use zookeeper.rootPath${hint})`);
    }
  }
  check.milliseconds("sessionTimeoutMs", sessionTimeoutMs, 1000);
  check.milliseconds("requestTimeoutMs", requestTimeoutMs, 1);
  if (typeof rootPath !== "string" || !/^(\/[^/\s]+)+$/.test(rootPath) || /\/\.\.?(\/|$)/.test(rootPath) || /^\/zookeeper(\/|$)/.test(rootPath)) {
    check.problem("zookeeper.rootPath must be an absolute path like /kubelock (no trailing slash, not under /zookeeper)");
  }
  const auth = authFile === undefined ? undefined : check.secret("authFile", authFile);
  if (auth !== undefined && !DIGEST_CREDENTIALS.test(auth)) check.problem(`zookeeper.authFile ${String(authFile)} must hold digest credentials user:password`);
  if (sessionFile !== undefined && (typeof sessionFile !== "string" || !sessionFile || !existsSync(dirname(sessionFile)))) {
    check.problem("zookeeper.sessionFile must be a file path in an existing directory");
  }
  if (typeof sessionSecret !== "string" || sessionSecret.length > 253 || !/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(sessionSecret)) {
    check.problem("zookeeper.sessionSecret must be a Secret name (lower-case letters, digits, '-', '.')");
  }
  check.done(name);
  return {
    name, connect, sessionTimeoutMs, rootPath, auth, authFile: auth === undefined ? undefined : authFile, sessionFile, sessionSecret, requestTimeoutMs,
  } as ZooKeeperBackendOptions;
}
