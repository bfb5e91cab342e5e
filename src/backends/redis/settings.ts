/** The `redis:` settings block: checked, its files read, before anything connects. */
import type { ConnectionOptions } from "node:tls";
import { SettingsCheck } from "../kit/settings";
import type { RedisSettings } from "./backend";

export const DEFAULT_PREFIX = "kubelock";
export const DEFAULT_TIMEOUT_MS = 2000;

/** Checks the `redis:` settings block; every mistake is one line of the thrown BackendConfigError. */
export function parseRedisSettings(name: string, raw: Record<string, unknown>): RedisSettings {
  const check = new SettingsCheck("redis");
  const { url, keyPrefix = DEFAULT_PREFIX, commandTimeoutMs = DEFAULT_TIMEOUT_MS, connectTimeoutMs = DEFAULT_TIMEOUT_MS, passwordFile, tls, sentinels, sentinelName, cluster = false, waitReplicas, ...unknown } = raw;
  check.unknown(unknown);
  let parsed: URL | undefined;
  if (typeof url !== "string" || !url) check.problem("redis.url is required (redis://host:port or rediss://host:port)");
  else {
    try {
      parsed = new URL(url);
    } catch {
      check.problem(`redis.url "${redact(url)}" is not a URL`);
    }
    if (parsed && !["redis:", "rediss:"].includes(parsed.protocol)) check.problem(`redis.url "${redact(url, parsed)}" must start with redis:// or rediss://`);
    if (parsed && !/^\/?(\d+)?$/.test(parsed.pathname)) check.problem(`redis.url "${redact(url, parsed)}": the path must be a database number`);
  }
  if (typeof keyPrefix !== "string" || !/^[^\s{}]+$/.test(keyPrefix)) check.problem("redis.keyPrefix must be a non-empty string without spaces or braces");
  check.milliseconds("commandTimeoutMs", commandTimeoutMs);
  check.milliseconds("connectTimeoutMs", connectTimeoutMs);
  const password = passwordFile === undefined ? undefined : check.secret("passwordFile", passwordFile);
  let tlsOptions: ConnectionOptions | undefined;
  let tlsFiles: RedisSettings["tlsFiles"];
  if (tls !== undefined) {
    const read = check.tls(tls, { allowInsecure: true });
    if (read) {
      if (parsed && parsed.protocol !== "rediss:") check.problem("redis.tls needs a rediss:// url");
      const { files, ...material } = read;
      [tlsOptions, tlsFiles] = [material, files];
    }
  }
  if (parsed?.protocol === "rediss:") tlsOptions ??= {};
  if (sentinels !== undefined) {
    const valid = Array.isArray(sentinels) && sentinels.length > 0 && sentinels.every((e) => typeof e?.host === "string" && e.host && Number.isInteger(e.port) && e.port > 0 && e.port < 65536);
    if (!valid) check.problem("redis.sentinels must be a non-empty list of {host, port}");
    if (typeof sentinelName !== "string" || !sentinelName) check.problem("redis.sentinelName (the master's name) is required with redis.sentinels");
  } else if (sentinelName !== undefined) check.problem("redis.sentinelName needs redis.sentinels");
  if (typeof cluster !== "boolean") check.problem("redis.cluster must be true or false");
  if (cluster === true && sentinels !== undefined) check.problem("redis.cluster and redis.sentinels exclude each other");
  let wait: RedisSettings["waitReplicas"];
  if (waitReplicas !== undefined && (typeof waitReplicas !== "object" || waitReplicas === null || Array.isArray(waitReplicas))) {
    check.problem("redis.waitReplicas must be a mapping {replicas, timeoutMs}");
  } else if (waitReplicas !== undefined) {
    const { replicas, timeoutMs, ...rest } = waitReplicas as Record<string, unknown>;
    check.unknown(rest, "redis.waitReplicas");
    if (!Number.isInteger(replicas) || (replicas as number) < 1) check.problem("redis.waitReplicas.replicas must be an integer >= 1");
    check.milliseconds("waitReplicas.timeoutMs", timeoutMs);
    if (Number.isInteger(timeoutMs) && Number.isInteger(commandTimeoutMs) && (timeoutMs as number) >= (commandTimeoutMs as number)) {
      check.problem("redis.waitReplicas.timeoutMs must be below redis.commandTimeoutMs (WAIT holds the connection that long)");
    }
    if (cluster === true) check.problem("redis.waitReplicas is not supported with redis.cluster");
    wait = { replicas: replicas as number, timeoutMs: timeoutMs as number };
  }
  check.done(name);
  return {
    url: url as string, keyPrefix: keyPrefix as string, commandTimeoutMs: commandTimeoutMs as number, connectTimeoutMs: connectTimeoutMs as number,
    password, passwordFile: password === undefined ? undefined : (passwordFile as string), waitReplicas: wait, tls: tlsOptions, tlsFiles, sentinels: sentinels as RedisSettings["sentinels"], sentinelName: sentinelName as string | undefined, cluster: cluster as boolean,
  };
}

/**
 * The URL for messages, cut to 200 characters: scheme, user name, host and path of a parsed URL (the
 * password masked, the query left out); of one that does not parse, everything up to its LAST '@' is
 * masked (a password may hold '@' itself).
 */
function redact(url: string, parsed?: URL): string {
  let shown: string;
  if (parsed) {
    const user = parsed.username || parsed.password ? `${parsed.username}${parsed.password ? ":***" : ""}@` : "";
    shown = `${parsed.protocol}//${user}${parsed.host}${parsed.pathname}${parsed.search ? "?…" : ""}`;
  } else {
    const at = url.lastIndexOf("@");
    const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(url)?.[0] ?? "";
    shown = at < 0 ? url : `${scheme}***${url.slice(at)}`;
  }
  return shown.length > 200 ? `${shown.slice(0, 200)}…` : shown;
}
