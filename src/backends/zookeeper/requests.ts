/**
 * The addon's request methods as the backend calls them: on its native binding, which the addon's JS wrapper
 * forwards to after formatting every call's arguments with util.inspect for a debug log, whether or not a logger
 * is set. Under load that formatting cost more CPU than the backend's own code for each request.
 *
 * The native methods take the same arguments and pass the same results: the wrapper converts only data to a
 * string when an encoding is set (the backend sets none, so data stays a Buffer) and a_set_acl's ACL entries
 * (kept on the wrapper, a rare call). A client without the binding (another build of the addon) is used as is.
 */
import type ZooKeeper from "zookeeper";

const FORWARDED = ["a_create", "a_delete_", "a_get", "a_get_children", "a_get_children2", "a_set", "aw_get", "aw_get_children", "aw_exists"] as const;
export type Requests = Pick<ZooKeeper, (typeof FORWARDED)[number] | "a_set_acl">;

const made = new WeakMap<ZooKeeper, Requests>();

/** `zk`'s requests, sent through its native binding when it has one. */
export function requestsOf(zk: ZooKeeper): Requests {
  let requests = made.get(zk);
  if (!requests) {
    const native = (zk as unknown as { native?: Partial<Record<(typeof FORWARDED)[number], (...args: unknown[]) => unknown>> }).native;
    const bound = FORWARDED.map((name) => [name, native?.[name]?.bind(native) ?? zk[name].bind(zk)]);
    requests = { ...Object.fromEntries(bound), a_set_acl: zk.a_set_acl.bind(zk) } as Requests;
    made.set(zk, requests);
  }
  return requests;
}
