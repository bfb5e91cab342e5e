/**
 * Where a ZooKeeper backend's session is handed from one leader to the next: one key (per leader election and
 * backend) of a Secret in the operator's own namespace. A hold is an ephemeral node of the session that created it,
 * so the replica that takes over leadership re-attaches to that session (its id and password) instead of
 * starting one of its own, and the holds live on.
 *
 * The Secret is meant to be readable by the operator's ServiceAccount only (deploy/ grants get and patch
 * on this one name, and creates it empty). The password is never logged; errors name the Secret, not its
 * contents. Writes are JSON merge patches of the one key, so backends sharing the Secret never clobber
 * each other; a Secret that does not exist yet is created (when RBAC allows).
 */
import { createHash } from "node:crypto";
import * as k8s from "@kubernetes/client-node";
import { apiErrorMessage, requestTimeout, statusCode } from "../../kube/client";

export interface ZooKeeperSession {
  /** The session id, hex. */
  id: string;
  /** The session password, 32 hex digits. */
  password: string;
}

/** Reads and writes the session a new leader takes over. */
export interface SessionStore {
  /** Where the session is kept, for messages (`Secret ns/name key k`). */
  readonly where: string;
  /** The last leader's session, or undefined when none was handed over (or it is unreadable). */
  load(): Promise<ZooKeeperSession | undefined>;
  save(session: ZooKeeperSession): Promise<void>;
}

/** The default Secret name (config `zookeeper.sessionSecret`). */
export const DEFAULT_SESSION_SECRET = "kubelock-zookeeper-sessions";
const REQUEST_TIMEOUT_MS = 5_000;

export class SecretSessionStore implements SessionStore {
  readonly where: string;
  private readonly api: k8s.CoreV1Api;
  private readonly patchOptions = k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch, requestTimeout(REQUEST_TIMEOUT_MS));

  constructor(kubeConfig: k8s.KubeConfig, private readonly namespace: string, private readonly name: string, private readonly key: string) {
    this.api = kubeConfig.makeApiClient(k8s.CoreV1Api);
    this.where = `Secret ${namespace}/${name} key ${key}`;
  }

  async load(): Promise<ZooKeeperSession | undefined> {
    let secret: k8s.V1Secret;
    try {
      secret = await this.api.readNamespacedSecret({ namespace: this.namespace, name: this.name }, requestTimeout(REQUEST_TIMEOUT_MS));
    } catch (err) {
      if (statusCode(err) === 404) return undefined;
      throw new Error(`reading the ZooKeeper session from ${this.where}: ${apiErrorMessage(err)}`, { cause: err });
    }
    const raw = secret.data?.[this.key];
    return raw === undefined ? undefined : parseSession(Buffer.from(raw, "base64").toString("utf8"));
  }

  async save(session: ZooKeeperSession): Promise<void> {
    const data = { [this.key]: Buffer.from(JSON.stringify(session)).toString("base64") };
    try {
      await this.api.patchNamespacedSecret({ namespace: this.namespace, name: this.name, body: { data } }, this.patchOptions);
    } catch (err) {
      if (statusCode(err) !== 404) throw new Error(`writing the ZooKeeper session to ${this.where}: ${apiErrorMessage(err)}`, { cause: err });
      const body: k8s.V1Secret = { metadata: { name: this.name, namespace: this.namespace, labels: { "app.kubernetes.io/managed-by": "kubelock" } }, type: "Opaque", data };
      await this.api.createNamespacedSecret({ namespace: this.namespace, body }, requestTimeout(REQUEST_TIMEOUT_MS)).catch((createErr: unknown) => {
        // Created by another replica meanwhile: patch it.
        if (statusCode(createErr) === 409) return this.save(session);
        throw new Error(`creating ${this.where} for the ZooKeeper session: ${apiErrorMessage(createErr)}`, { cause: createErr });
      });
    }
  }
}

/** A session as stored (JSON `{id, password}`); undefined when it is not one. */
export function parseSession(text: string): ZooKeeperSession | undefined {
  try {
    const { id, password } = JSON.parse(text) as Partial<ZooKeeperSession>;
    return /^[0-9a-f]+$/.test(String(id)) && /^[0-9A-F]{32}$/i.test(String(password)) ? { id: id!, password: password! } : undefined;
  } catch {
    return undefined;
  }
}
/** The Secret key of one election's session for one backend: `<lease namespace>.<lease name>.<backend>` (hashed past 253). */
export function sessionKey(election: string, backend: string): string {
  const key = `${election}.${backend}`;
  return key.length <= 253 ? key : `${backend}.${createHash("sha256").update(key).digest("hex").slice(0, 40)}`;
}

