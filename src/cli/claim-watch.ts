/**
 * Follows one LockClaim through the API server's watch: list it (fieldSelector metadata.name=NAME, which
 * also gives a resourceVersion), then watch from there, re-watching whenever the server ends the
 * stream, and listing again when the resourceVersion is too old (410 Gone). Every state seen is handed
 * to `onClaim` (`undefined`: the claim does not exist, or was deleted). Permission errors are fatal.
 */
import * as k8s from "@kubernetes/client-node";
import { CLAIM_PLURAL, GROUP, VERSION, type LockClaim } from "../api/types";
import { apiError, httpStatus, sleep, type CliError, type Cluster } from "./common";

export interface ClaimWatch {
  stop(): void;
}

interface WatchStatus { kind?: string; code?: number; message?: string }

export function watchClaim(
  cluster: Cluster,
  name: string,
  onClaim: (claim: LockClaim | undefined) => void,
  onFatal: (err: CliError) => void,
): ClaimWatch {
  const { kc, custom, namespace } = cluster;
  const fieldSelector = `metadata.name=${name}`;
  const path = `/apis/${GROUP}/${VERSION}/namespaces/${namespace}/${CLAIM_PLURAL}`;
  const stopper = new AbortController();
  let current: AbortController | undefined;
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
    const result = (await custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: CLAIM_PLURAL, fieldSelector })) as {
      metadata: { resourceVersion: string };
      items: LockClaim[];
    };
    resourceVersion = result.metadata.resourceVersion;
    deliver(result.items[0]);
  };

  /** One watch stream; resolves when it ends, with whether the resourceVersion expired. */
  const watchOnce = (): Promise<{ gone: boolean }> => new Promise((resolve, reject) => {
    let gone = false;
    new k8s.Watch(kc).watch(path, { fieldSelector, resourceVersion, allowWatchBookmarks: true }, (type: string, obj: unknown) => {
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
    }, (err: unknown) => {
      if (err && !(err instanceof Error && err.name === "AbortError")) {
        if (httpStatus(err) === 410) resolve({ gone: true });
        else reject(err);
      } else resolve({ gone });
    }).then((controller) => {
      current = controller;
      if (stopper.signal.aborted) controller.abort();
    }, reject);
  });

  const loop = async () => {
    let needList = true;
    while (!stopper.signal.aborted) {
      try {
        if (needList) await list();
        needList = false;
        if (stopper.signal.aborted) return;
        const { gone } = await watchOnce();
        needList = gone;
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
      current?.abort();
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
