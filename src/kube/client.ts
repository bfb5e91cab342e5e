/**
 * The operator's writes to the API server: merge patches of status and metadata for locks and
 * claims, claim creation, pod gate removal and Events. Reads come from informer caches, never from here.
 */
import * as k8s from "@kubernetes/client-node";
import { CLAIM_PLURAL, GROUP, LOCK_PLURAL, VERSION, type LockClaim, type ObjectMeta } from "../api/types";

/** Every API call of the operator gives up after this long: client-node sets no timeout of its own. */
export const API_REQUEST_TIMEOUT_MS = 30_000;

/** Per-call options that abort a request after `ms` (a fresh signal for each request). */
export function requestTimeout(ms = API_REQUEST_TIMEOUT_MS): k8s.ConfigurationOptions<k8s.ObservableMiddleware> {
  return {
    middleware: [{
      pre: (context) => {
        context.setSignal(AbortSignal.timeout(ms));
        return new k8s.Observable(Promise.resolve(context));
      },
      post: (response) => new k8s.Observable(Promise.resolve(response)),
    }],
    middlewareMergeStrategy: "append",
  };
}

const timeout = requestTimeout();
const mergePatch = k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch, timeout);
const jsonPatch = k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.JsonPatch, timeout);

export type Plural = typeof LOCK_PLURAL | typeof CLAIM_PLURAL;

/** The HTTP status of a failed API call (or of the API call that caused it), if it was one. */
export function statusCode(err: unknown): number | undefined {
  if (err instanceof k8s.ApiException) return err.code;
  if (err instanceof Error && err.cause instanceof k8s.ApiException) return err.cause.code;
  return undefined;
}

/**
 * A failed call in one line: for an API error, `HTTP <code>: <the Status message>` (the exception's
 * own message carries every response header).
 */
export function apiErrorMessage(err: unknown): string {
  if (!(err instanceof k8s.ApiException)) return err instanceof Error ? err.message : String(err);
  const body = err.body;
  let message: string | undefined;
  try {
    message = (typeof body === "string" ? (JSON.parse(body) as { message?: string }) : (body as { message?: string }))?.message;
  } catch {
    message = typeof body === "string" && body ? body.slice(0, 300) : undefined;
  }
  return `HTTP ${err.code}: ${message ?? "no message"}`;
}

/** A Status's `details.causes` entry. */
interface StatusCause {
  field?: string;
  message?: string;
}

/**
 * Why the API server refused a request, in words for a person (an Event, a log line): the refusal's causes
 * (`field: message`, joined by "; "), else its Status message; whitespace runs are one space, and the text is
 * cut to `max` characters. Never the HTTP dump an ApiException's own message is (code, raw body, headers).
 */
export function apiRefusal(err: unknown, max = 1000): string {
  const apiErr = err instanceof k8s.ApiException ? err : err instanceof Error && err.cause instanceof k8s.ApiException ? err.cause : undefined;
  let text: string;
  if (!apiErr) text = err instanceof Error ? err.message : String(err);
  else {
    let status: { message?: string; details?: { causes?: StatusCause[] } } | undefined;
    try {
      status = typeof apiErr.body === "string" ? JSON.parse(apiErr.body) : apiErr.body;
    } catch {
      status = undefined;
    }
    const causes = (Array.isArray(status?.details?.causes) ? status.details.causes : [])
      .filter((c) => typeof c?.message === "string" && c.message)
      // A field the server could not name comes as "<nil>" (an int32 format check): left out.
      .map((c) => (c.field && c.field !== "<nil>" && !c.message!.startsWith(c.field) ? `${c.field}: ${c.message}` : c.message!));
    text = causes.length > 0 ? causes.join("; ") : typeof status?.message === "string" && status.message ? status.message : `the API server answered HTTP ${apiErr.code}`;
  }
  text = text.replace(/\s+/g, " ").trim();
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

export function isNotFound(err: unknown): boolean {
  return statusCode(err) === 404;
}

/**
 * A JSON merge patch turning `before` into `after` at the top level: changed keys are set, keys that
 * disappeared are set to null (merge patch's "remove").
 */
export function mergeDiff<T extends object>(before: T | undefined, after: T): Record<string, unknown> {
  const patch: Record<string, unknown> = { ...(after as Record<string, unknown>) };
  for (const key of Object.keys(before ?? {})) if (!(key in after)) patch[key] = null;
  return patch;
}

export class KubeClient {
  readonly custom: k8s.CustomObjectsApi;
  readonly core: k8s.CoreV1Api;

  constructor(readonly kubeConfig: k8s.KubeConfig) {
    this.custom = kubeConfig.makeApiClient(k8s.CustomObjectsApi);
    this.core = kubeConfig.makeApiClient(k8s.CoreV1Api);
  }

  /** Writes the status subresource and returns the object written; fields of `before` missing from `after` are removed. */
  async patchStatus<S extends object>(plural: Plural, meta: ObjectMeta, before: S | undefined, after: S): Promise<unknown> {
    return this.custom.patchNamespacedCustomObjectStatus(
      {
        group: GROUP, version: VERSION, plural, namespace: meta.namespace, name: meta.name,
        // resourceVersion makes the write conditional: a status computed from a stale object is refused (409).
        body: { metadata: { resourceVersion: meta.resourceVersion }, status: mergeDiff(before, after) },
      },
      mergePatch,
    );
  }

  /** Sets the finalizer list, guarded by resourceVersion so a concurrent change is never lost. */
  async setFinalizers(plural: Plural, meta: ObjectMeta, finalizers: string[]): Promise<unknown> {
    return this.custom.patchNamespacedCustomObject(
      {
        group: GROUP, version: VERSION, plural, namespace: meta.namespace, name: meta.name,
        body: { metadata: { finalizers, resourceVersion: meta.resourceVersion } },
      },
      mergePatch,
    );
  }

  /** Adds annotations (a merge patch: other annotations stay); returns the object written. */
  async annotate(plural: Plural, meta: ObjectMeta, annotations: Record<string, string>): Promise<unknown> {
    return this.custom.patchNamespacedCustomObject(
      { group: GROUP, version: VERSION, plural, namespace: meta.namespace, name: meta.name, body: { metadata: { annotations } } },
      mergePatch,
    );
  }

  /** A claim read live from the API server (not a cache): the evidence before a hold is released as an orphan. */
  async getClaim(namespace: string, name: string): Promise<LockClaim> {
    return (await this.custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, plural: CLAIM_PLURAL, namespace, name }, timeout)) as LockClaim;
  }

  /**
   * Whether the lock exists, read live (a list by name: the operator may list locks, not get them): the evidence
   * before its claims are told it does not, since the claims' watch may deliver a claim before the locks' watch
   * delivers the lock created just before it.
   */
  async lockExists(namespace: string, name: string): Promise<boolean> {
    const list = (await this.custom.listNamespacedCustomObject({
      group: GROUP, version: VERSION, plural: LOCK_PLURAL, namespace, fieldSelector: `metadata.name=${name}`, limit: 1,
    }, timeout)) as { items?: unknown[] };
    return (list.items?.length ?? 0) > 0;
  }

  async createClaim(claim: LockClaim): Promise<LockClaim> {
    return (await this.custom.createNamespacedCustomObject({
      group: GROUP, version: VERSION, plural: CLAIM_PLURAL, namespace: claim.metadata.namespace, body: claim,
    }, timeout)) as LockClaim;
  }

  /**
   * Removes one scheduling gate from `pod`: a JSON patch guarded by tests of the pod's UID (a pod
   * recreated under the same name meanwhile is left alone: the API server refuses the patch, and the pod is
   * reconciled again from a fresh cache) and of the gate's position.
   */
  async removeSchedulingGate(pod: k8s.V1Pod, gate: string): Promise<void> {
    const index = pod.spec?.schedulingGates?.findIndex((g) => g.name === gate) ?? -1;
    if (index < 0) return;
    await this.core.patchNamespacedPod(
      {
        name: pod.metadata!.name!, namespace: pod.metadata!.namespace!,
        body: [
          { op: "test", path: "/metadata/uid", value: pod.metadata!.uid },
          { op: "test", path: `/spec/schedulingGates/${index}/name`, value: gate },
          { op: "remove", path: `/spec/schedulingGates/${index}` },
        ],
      },
      jsonPatch,
    );
  }
}
