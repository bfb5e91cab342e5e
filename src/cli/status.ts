/** `kubelock status LOCK`: a lock's settings, conditions, holders and waiting queue, for people. */
import { CLAIM_PLURAL, ConditionType, GROUP, LOCK_DEFAULTS, VERSION, type LockClaim } from "../api/types";
import {
  COMMON_FLAGS_HELP, call, command, connect, getLock, grantedCondition, parseFlags, timeoutOf, usageError,
} from "./common";
import { formatAge, formatDuration } from "./duration";

export const statusHelp = `Usage: kubelock status LOCK [flags]

Shows a DistributedLock for people: its backend and settings, its Ready and Available conditions,
every holder (claim, holder identity, cluster for holders granted by another cluster sharing the
backend, fencing token, how long held) and the waiting queue (Pending claims in grant order, with
priority and age; claims that cannot queue yet last, with the reason).

Flags:
${COMMON_FLAGS_HELP}

Exit codes:
  0  shown
  1  unexpected error
  2  usage error
  5  the lock does not exist
  6  permission denied (get distributedlocks, list lockclaims)`;

/** Left-aligned columns, two spaces apart, as kubectl prints tables. */
export function table(rows: string[][], indent = "  "): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => indent + r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]))).join("   ").trimEnd()).join("\n");
}

const ageOf = (time: string | undefined, now: number) => (time ? formatAge(now - Date.parse(time)) : "-");

export const statusCommand = command("status", async (argv) => {
  const { values, positionals } = parseFlags(argv, {}, true);
  if (values.help) {
    console.log(statusHelp);
    return 0;
  }
  if (positionals.length !== 1) throw usageError(positionals.length === 0 ? "missing LOCK: kubelock status LOCK" : `one LOCK only, not ${positionals.join(" ")}`);
  const name = positionals[0];
  const cluster = connect(values);
  const { custom, namespace } = cluster;
  const lock = await getLock(cluster, name);
  const claims = await call("list", CLAIM_PLURAL, namespace, async () =>
    ((await custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: CLAIM_PLURAL }, timeoutOf(cluster))) as { items: LockClaim[] }).items);
  const now = Date.now();

  const condition = (type: string) => {
    const c = lock.status?.conditions?.find((x) => x.type === type);
    return c ? `${c.status.padEnd(5)}   ${c.reason}: ${c.message}` : "Unknown (no status from the operator yet: is it running?)";
  };
  const maxHolders = lock.spec.maxHolders ?? LOCK_DEFAULTS.maxHolders;
  const lines = [
    table([
      ["Lock:", `${name}`],
      ["Namespace:", namespace],
      ["Backend:", lock.spec.backend ?? "(operator default)"],
      ["Key:", lock.spec.key ?? name],
      ["Max holders:", String(maxHolders)],
      ["Lease:", formatDuration((lock.spec.leaseDurationSeconds ?? LOCK_DEFAULTS.leaseDurationSeconds) * 1000)],
      [`${ConditionType.Ready}:`, condition(ConditionType.Ready)],
      [`${ConditionType.Available}:`, condition(ConditionType.Available)],
      ["Transitions:", String(lock.status?.leaseTransitions ?? 0)],
    ], ""),
    "",
  ];

  const holders = lock.status?.holders ?? [];
  lines.push(`Holders (${holders.length} of ${maxHolders}):`);
  if (holders.length === 0) lines.push("  none");
  else {
    lines.push(table([
      ["CLAIM", "HOLDER", "CLUSTER", "TOKEN", "SINCE"],
      ...holders.map((h) => [h.claim, h.holderIdentity, h.cluster ?? "-", h.fencingToken, ageOf(h.acquireTime, now)]),
    ]));
  }

  const waiting = claims
    .filter((c) => c.spec.lockName === name && !c.metadata.deletionTimestamp && (c.status?.phase ?? "Pending") === "Pending")
    .sort((a, b) => (a.status?.position ?? Infinity) - (b.status?.position ?? Infinity)
      || (b.spec.priority ?? 0) - (a.spec.priority ?? 0)
      || Date.parse(a.metadata.creationTimestamp ?? "") - Date.parse(b.metadata.creationTimestamp ?? ""));
  lines.push("", `Waiting (${waiting.length}):`);
  if (waiting.length === 0) lines.push("  none");
  else {
    lines.push(table([
      ["POSITION", "CLAIM", "HOLDER", "PRIORITY", "AGE", "NOTE"],
      ...waiting.map((c) => {
        const cond = grantedCondition(c);
        const note = c.status?.position !== undefined ? "" : cond ? `${cond.reason}: ${cond.message}` : "not seen by the operator yet";
        return [String(c.status?.position ?? "-"), c.metadata.name, c.spec.podName ?? c.metadata.name, String(c.spec.priority ?? 0), ageOf(c.metadata.creationTimestamp, now), note];
      }),
    ]));
  }
  console.log(lines.join("\n"));
  return 0;
});
