/**
 * Follows one LockClaim through the API server's watch: list it (fieldSelector metadata.name=NAME, which
 * also gives a resourceVersion), then watch from there, re-watching whenever the server ends the
 * stream, and listing again when the resourceVersion is too old (410 Gone). Every state seen is handed
 * to `onClaim` (`undefined`: the claim does not exist, or was deleted). Permission errors are fatal.
 *
 * A watchdog guards against a stream that silently stops (a half-open connection delivers nothing and
 * never ends): the server is asked to end each stream after two thirds of `idleMs`, and a stream that
 * has neither delivered anything nor ended within `idleMs` is abandoned and the claim listed again.
 */
import * as k8s from "@kubernetes/client-node";
import { CLAIM_PLURAL, GROUP, VERSION, type LockClaim } from "../api/types";
import { apiError, httpStatus, sleep, timeoutOf, type CliError, type Cluster } from "./common";

/** Default bound on a watch stream's silence (events, bookmarks or its end). */
export const WATCH_IDLE_MS = 45_000;

export interface ClaimWatch {
  stop(): void;
}

interface WatchStatus { kind?: string; code?: number; message?: string }

export interface WatchOptions {
  /** The watchdog's bound on a silent stream (default WATCH_IDLE_MS). */
  idleMs?: number;
}

/**
 * `kc` for k8s.Watch, whose request then fails when no response headers came within `ms` (node-fetch's
 * own `timeout`: Watch sets no deadline, and its abort controller only exists once the headers came).
 */
function withConnectTimeout(kc: k8s.KubeConfig, ms: number): k8s.KubeConfig {
  const bounded = Object.create(kc) as k8s.KubeConfig;
  bounded.applyToFetchOptions = (opts) => kc.applyToFetchOptions({ ...opts, timeout: ms });
  return bounded;
}

export function watchClaim(
  cluster: Cluster,
  name: string,
  onClaim: (claim: LockClaim | undefined) => void,
  onFatal: (err: CliError) => void,
  options: WatchOptions = {},
): ClaimWatch {
  const { custom, namespace } = cluster;
  const idleMs = options.idleMs ?? WATCH_IDLE_MS;
  const kc = withConnectTimeout(cluster.kc, idleMs);
  const fieldSelector = `metadata.name=${name}`;
  const path = `/apis/${GROUP}/${VERSION}/namespaces/${namespace}/${CLAIM_PLURAL}`;
  const timeoutSeconds = Math.max(1, Math.floor((idleMs * 2) / 3000));
  const stopper = new AbortController();
  let resourceVersion: string | undefined;
  let failures = 0;

  const deliver = (claim: LockClaim | undefined) => {
    if (!stopper.signal.aborted) onClaim(claim);
  };
  const fatal = (err: unknown, verb: string): boolean => {
    const status = httpStatus(err);
    if (status !== 401 && status !== 403) return false;
    if (!stopper.signal.aborted) {
      stopper.abort();
      onFatal(apiError(err, verb, CLAIM_PLURAL, namespace));
    }
    return true;
  };

  const list = async (): Promise<void> => {
    const result = (await custom.listNamespacedCustomObject(
      { group: GROUP, version: VERSION, namespace, plural: CLAIM_PLURAL, fieldSelector },
      timeoutOf(cluster),
    )) as { metadata: { resourceVersion: string }; items: LockClaim[] };
    resourceVersion = result.metadata.resourceVersion;
    deliver(result.items[0]);
  };

  /**
   * One watch stream; resolves when it ends, with whether to list again (the resourceVersion expired,
   * or the watchdog gave up on a silent stream, whose late events are then ignored).
   */
  const watchOnce = (): Promise<{ relist: boolean }> => new Promise((resolve, reject) => {
    let gone = false;
    let abandoned = false;
    let controller: AbortController | undefined;
    let watchdog: NodeJS.Timeout | undefined;
    const settle = (outcome: () => void) => {
      if (abandoned) return;
      abandoned = true;
      clearTimeout(watchdog);
      stopper.signal.removeEventListener("abort", onStop);
      outcome();
    };
    const giveUp = (relist: boolean) => settle(() => {
      controller?.abort();
      resolve({ relist });
    });
    const onStop = () => giveUp(false);
    const feed = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => giveUp(true), idleMs);
    };
    stopper.signal.addEventListener("abort", onStop, { once: true });
    feed();
    new k8s.Watch(kc).watch(path, { fieldSelector, resourceVersion, allowWatchBookmarks: true, timeoutSeconds }, (type: string, obj: unknown) => {
      if (abandoned) return;
      feed();
      if (type === "ERROR") {
        const status = obj as WatchStatus;
        if (status.code === 410) gone = true;
        return;
      }
      const claim = obj as LockClaim;
      if (claim?.metadata?.resourceVersion) resourceVersion = claim.metadata.resourceVersion;
      failures = 0;
      if (type === "ADDED" || type === "MODIFIED") deliver(claim);
      else if (type === "DELETED") deliver(undefined);
    }, (err: unknown) => settle(() => {
      if (err && !(err instanceof Error && err.name === "AbortError")) {
        if (httpStatus(err) === 410) resolve({ relist: true });
        else reject(err);
      } else resolve({ relist: gone });
    })).then((started) => {
      controller = started;
      if (abandoned) started.abort();
    }, (err: unknown) => settle(() => reject(err)));
  });

  const loop = async () => {
    let needList = true;
    while (!stopper.signal.aborted) {
      try {
        if (needList) await list();
        needList = false;
        if (stopper.signal.aborted) return;
        const { relist } = await watchOnce();
        needList = relist;
      } catch (err) {
        if (fatal(err, needList ? "list" : "watch")) return;
        // API server unreachable or restarting: try again, backing off to 5 s.
        failures++;
        needList = needList || httpStatus(err) === 410;
        await sleep(Math.min(5000, 250 * 2 ** Math.min(failures, 5)), stopper.signal);
      }
    }
  };
  void loop();

  return {
    stop() {
      stopper.abort();
    },
  };
}

/**
 * Watches the claim until `check` returns something other than undefined for a state (`undefined`
 * claim: gone) and resolves with that; resolves `{ timedOut: true }` after `timeoutMs`.
 */
export function untilClaim<T>(
  cluster: Cluster,
  name: string,
  check: (claim: LockClaim | undefined) => T | undefined,
  timeoutMs: number,
): Promise<{ value: T } | { timedOut: true; last?: LockClaim }> {
  return new Promise((resolve, reject) => {
    let last: LockClaim | undefined;
    const timer = setTimeout(() => {
      watch.stop();
      resolve({ timedOut: true, last });
    }, timeoutMs);
    const watch = watchClaim(cluster, name, (claim) => {
      last = claim;
      const value = check(claim);
      if (value === undefined) return;
      clearTimeout(timer);
      watch.stop();
      resolve({ value });
    }, (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}
