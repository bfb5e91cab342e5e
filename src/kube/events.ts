/** Kubernetes Events on locks and claims, as `kubectl describe` shows them. Best effort: a failed write is logged, never thrown. */
import * as k8s from "@kubernetes/client-node";
import type { ObjectMeta } from "../api/types";
import type { Logger } from "../log";
import { requestTimeout } from "./client";

export interface EventTarget {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
}

export class EventRecorder {
  private readonly core: k8s.CoreV1Api;

  constructor(kubeConfig: k8s.KubeConfig, private readonly component: string, private readonly log: Logger) {
    this.core = kubeConfig.makeApiClient(k8s.CoreV1Api);
  }

  record(target: EventTarget, type: "Normal" | "Warning", reason: string, message: string): void {
    const now = new Date();
    const { namespace, name, uid, resourceVersion } = target.metadata;
    const event: k8s.CoreV1Event = {
      metadata: { generateName: `${name}.`, namespace },
      involvedObject: { apiVersion: target.apiVersion, kind: target.kind, namespace, name, uid, resourceVersion },
      type,
      reason,
      message,
      source: { component: this.component },
      reportingComponent: this.component,
      reportingInstance: process.env.POD_NAME ?? this.component,
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    };
    this.core.createNamespacedEvent({ namespace, body: event }, requestTimeout()).catch((err: Error) =>
      this.log.debug("event not recorded", { reason, object: `${namespace}/${name}`, error: err.message }),
    );
  }
}
