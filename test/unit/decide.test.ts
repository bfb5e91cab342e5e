/** The grant decision, table-driven: no I/O, no cluster. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ClaimReason, type LockClaim } from "../../src/api/types";
import { assessClaim } from "../../src/grant/claim-facts";
import { decide, type ClaimFacts, type Decision, type DecisionInput } from "../../src/grant/decide";

const claim = (id: string, extra: Partial<ClaimFacts> = {}): ClaimFacts => ({ id, name: id, priority: 0, createdAt: 1000, ...extra });
const hold = (holderId: string, cluster = "east") => ({ holderId, cluster });

interface Case {
  name: string;
  input: Partial<DecisionInput> & Pick<DecisionInput, "claims">;
  want: Partial<Decision>;
}

const cases: Case[] = [
  {
    name: "a free mutex grants the first in line",
    input: { claims: [claim("a", { createdAt: 2 }), claim("b", { createdAt: 1 })] },
    want: { queue: ["b", "a"], grantable: 1, keep: [] },
  },
  {
    name: "FIFO by creation time within a priority, ties by name",
    input: { maxHolders: 0, claims: [claim("c", { createdAt: 5 }), claim("b", { createdAt: 5 }), claim("a", { createdAt: 9 })] },
    want: { queue: ["b", "c", "a"], grantable: 0 },
  },
  {
    name: "higher priority goes first, whatever its age",
    input: { claims: [claim("old"), claim("urgent", { priority: 10, createdAt: 99_999 }), claim("low", { priority: -1, createdAt: 0 })] },
    want: { queue: ["urgent", "old", "low"], grantable: 1 },
  },
  {
    name: "a holder keeps its slot; nothing else is grantable on a mutex",
    input: { claims: [claim("h", { phase: "Granted" }), claim("w")], holds: [hold("h")] },
    want: { keep: ["h"], queue: ["w"], grantable: 0 },
  },
  {
    name: "a semaphore of 3 with one holder grants two more",
    input: { maxHolders: 3, claims: [claim("h", { phase: "Granted" }), claim("w1", { createdAt: 1 }), claim("w2", { createdAt: 2 }), claim("w3", { createdAt: 3 })], holds: [hold("h")] },
    want: { keep: ["h"], queue: ["w1", "w2", "w3"], grantable: 2 },
  },
  {
    name: "holds of another cluster take slots but are not ours to keep or release",
    input: { maxHolders: 2, claims: [claim("w")], holds: [hold("x", "west"), hold("y", "west")] },
    want: { keep: [], orphans: [], grantable: 0, queue: ["w"] },
  },
  {
    name: "a holder that must end releases, and the next can be granted in the same pass",
    input: { claims: [claim("h", { phase: "Granted", end: { reason: ClaimReason.HolderTerminated, message: "pod ended" } }), claim("w")], holds: [hold("h")] },
    want: {
      endings: [{ id: "h", phase: "Released", reason: ClaimReason.HolderTerminated, message: "pod ended", release: true }],
      keep: [], queue: ["w"], grantable: 1,
    },
  },
  {
    name: "Granted without a backend hold is Lost, before anything is granted to others",
    input: { claims: [claim("g", { phase: "Granted" }), claim("w")] },
    want: { keep: [], queue: ["w"], grantable: 1 },
  },
  {
    name: "a waiting claim past its wait timeout ends Expired and is not queued",
    input: { claims: [claim("w", { end: { reason: ClaimReason.WaitTimeout, message: "too long" } })], holds: [hold("other-claim-gone")] },
    want: { endings: [{ id: "w", phase: "Expired", reason: ClaimReason.WaitTimeout, message: "too long", release: true }], orphans: ["other-claim-gone"], queue: [], grantable: 0 },
  },
  {
    name: "terminal claims never hold again; a hold left behind is released",
    input: { claims: [claim("done", { phase: "Released" }), claim("w")], holds: [hold("done")] },
    want: { orphans: ["done"], keep: [], queue: ["w"], grantable: 1 },
  },
  {
    name: "lock-delay: a heartbeat that expired leaves its hold to lapse, taking its slot meanwhile",
    input: { claims: [claim("h", { phase: "Granted", end: { reason: ClaimReason.LeaseExpired, message: "no heartbeat" } }), claim("w")], holds: [hold("h")] },
    want: {
      endings: [{ id: "h", phase: "Expired", reason: ClaimReason.LeaseExpired, message: "no heartbeat", release: false }],
      lapsing: ["h"], orphans: [], keep: [], queue: ["w"], grantable: 0,
    },
  },
  {
    name: "a hold whose validity deadline passed without a confirmed renewal is Lost and lapses",
    input: { claims: [claim("h", { phase: "Granted", validityPassed: true }), claim("w")], holds: [hold("h")] },
    want: { lapsing: ["h"], keep: [], queue: ["w"], grantable: 0 },
  },
  {
    name: "a Lost claim's hold still in the backend keeps lapsing; a Released one's goes at once",
    input: { maxHolders: 3, claims: [claim("lost", { phase: "Lost", lapses: true }), claim("done", { phase: "Released" }), claim("w")], holds: [hold("lost"), hold("done")] },
    want: { lapsing: ["lost"], orphans: ["done"], queue: ["w"], grantable: 1 },
  },
  {
    name: "a hold of one of our claims is ours whatever cluster name it carries (clusterName changed meanwhile)",
    input: { claims: [claim("h", { phase: "Granted" }), claim("w")], holds: [hold("h", "old-name"), hold("x", "west")] },
    want: { keep: ["h"], orphans: [], queue: ["w"], grantable: 0 },
  },
  {
    name: "a hold on this process's own backend session is ours under any cluster name, so one whose claim is gone is an orphan",
    input: { claims: [claim("w")], holds: [{ holderId: "gone", cluster: "old-name", ownSession: true }, hold("x", "west")], maxHolders: 2 },
    want: { keep: [], orphans: ["gone"], queue: ["w"], grantable: 1 },
  },
  {
    name: "backend queue: the front of a held mutex's queue waits there, one entry per slot this cluster could hold",
    input: { claims: [claim("w1", { createdAt: 1 }), claim("w2", { createdAt: 2 })], holds: [hold("f", "west")] },
    want: { queue: ["w1", "w2"], grantable: 0, enqueue: 1, withdraw: [] },
  },
  {
    name: "backend queue: a semaphore of 3 with one own holder queues two; the third waiter's entry is withdrawn",
    input: {
      maxHolders: 3,
      claims: [claim("h", { phase: "Granted" }), claim("w1", { createdAt: 1 }), claim("w2", { createdAt: 2 }), claim("w3", { createdAt: 3 })],
      holds: [hold("h"), hold("f1", "west"), hold("f2", "west")],
      entries: [hold("w3"), hold("w1")],
    },
    want: { keep: ["h"], queue: ["w1", "w2", "w3"], grantable: 0, enqueue: 2, withdraw: ["w3"] },
  },
  {
    name: "backend queue: a claim overtaken by a higher priority gives up its entry; other clusters' entries stay",
    input: { claims: [claim("old", { createdAt: 1 }), claim("urgent", { priority: 5, createdAt: 9 })], holds: [hold("f", "west")], entries: [hold("x", "west"), hold("old")] },
    want: { queue: ["urgent", "old"], enqueue: 1, withdraw: ["old"] },
  },
  {
    name: "backend queue: an entry of this cluster with no claim is withdrawn; an ending claim releases its own",
    input: { claims: [claim("w", { end: { reason: ClaimReason.WaitTimeout, message: "too long" } })], holds: [hold("f", "west")], entries: [hold("w"), hold("gone")] },
    want: { queue: [], enqueue: 0, withdraw: ["gone"] },
  },
  {
    name: "backend queue: a cluster holding every slot of its own queues nothing",
    input: { claims: [claim("h", { phase: "Granted" }), claim("w")], holds: [hold("h")], entries: [hold("w")] },
    want: { keep: ["h"], queue: ["w"], enqueue: 0, withdraw: ["w"] },
  },
  {
    name: "a blocked claim (missing pod) is not queued",
    input: { claims: [claim("blocked", { blocked: true }), claim("w", { createdAt: 2000 })] },
    want: { queue: ["w"], grantable: 1 },
  },
];

describe("decide", () => {
  for (const c of cases) {
    test(c.name, () => {
      const got = decide({ maxHolders: 1, cluster: "east", holds: [], ...c.input });
      for (const [field, value] of Object.entries(c.want)) assert.deepEqual(got[field as keyof Decision], value, field);
    });
  }

  test("Lost ending carries the reason and tells the holder what to do", () => {
    const got = decide({ maxHolders: 1, cluster: "east", holds: [], claims: [claim("g", { phase: "Granted" })] });
    assert.equal(got.endings[0].phase, "Lost");
    assert.equal(got.endings[0].reason, ClaimReason.Lost);
    assert.match(got.endings[0].message, /fencing token/);
  });
});

describe("assessClaim", () => {
  const now = Date.parse("2026-01-01T00:01:00Z");
  const base = (spec: Partial<LockClaim["spec"]> = {}, status: LockClaim["status"] = {}, meta: Partial<LockClaim["metadata"]> = {}): LockClaim => ({
    apiVersion: "kubelock.io/v1alpha1",
    kind: "LockClaim",
    metadata: { name: "c", namespace: "ns", uid: "u1", creationTimestamp: "2026-01-01T00:00:00Z", ...meta },
    spec: { lockName: "l", ...spec },
    status,
  });

  const table: {
    name: string; claim: LockClaim; pod?: Parameters<typeof assessClaim>[1]; heartbeatSeenAt?: string; waitingSeenAt?: string; reason?: string; blocked?: boolean; deadline?: string;
  }[] = [
    { name: "deleted claim ends Released", claim: base({}, {}, { deletionTimestamp: "2026-01-01T00:00:30Z" }), reason: "Released" },
    { name: "release annotation ends Released", claim: base({}, {}, { annotations: { "kubelock.io/release": "true" } }), reason: "Released" },
    { name: "granted claim whose pod is gone ends HolderTerminated", claim: base({ podName: "p" }, { phase: "Granted" }), pod: { exists: false }, reason: "HolderTerminated" },
    { name: "waiting claim whose pod does not exist yet is blocked", claim: base({ podName: "p" }), pod: { exists: false }, blocked: true },
    { name: "pod Succeeded ends HolderTerminated", claim: base({ podName: "p" }), pod: { exists: true, phase: "Succeeded" }, reason: "HolderTerminated" },
    {
      name: "a new pod reusing the name does not inherit the claim (pod UID checked)",
      claim: base({ podName: "p" }, { phase: "Granted" }, { ownerReferences: [{ apiVersion: "v1", kind: "Pod", name: "p", uid: "old" }] }),
      pod: { exists: true, phase: "Running", uid: "new" }, reason: "HolderTerminated",
    },
    {
      name: "the claim's own pod, by UID: nothing ends",
      claim: base({ podName: "p" }, { phase: "Granted" }, { ownerReferences: [{ apiVersion: "v1", kind: "Pod", name: "p", uid: "same" }] }),
      pod: { exists: true, phase: "Running", uid: "same" },
    },
    { name: "running pod: nothing ends", claim: base({ podName: "p" }), pod: { exists: true, phase: "Running" } },
    {
      name: "heartbeat unchanged for its lease (as this process saw it) expires",
      claim: base({ leaseDurationSeconds: 10, renewTime: "2026-01-01T00:00:59Z" }, { phase: "Granted" }), heartbeatSeenAt: "2026-01-01T00:00:50Z", reason: "LeaseExpired",
    },
    {
      name: "a heartbeat seen recently sets the deadline from when it was seen",
      claim: base({ leaseDurationSeconds: 10, renewTime: "2026-01-01T00:00:55Z" }, { phase: "Granted" }), heartbeatSeenAt: "2026-01-01T00:00:57Z", deadline: "2026-01-01T00:01:07Z",
    },
    {
      name: "a renewTime far in the past (the holder's clock is behind) does not expire a heartbeat seen just now",
      claim: base({ leaseDurationSeconds: 10, renewTime: "2025-12-31T23:00:00Z" }, { phase: "Granted" }), deadline: "2026-01-01T00:01:10Z",
    },
    {
      name: "a renewTime far in the future (the holder's clock is ahead) does not keep an unchanged heartbeat alive",
      claim: base({ leaseDurationSeconds: 10, renewTime: "2026-01-01T01:00:00Z" }, { phase: "Granted" }), heartbeatSeenAt: "2026-01-01T00:00:45Z", reason: "LeaseExpired",
    },
    { name: "wait timeout reached", claim: base({ waitTimeoutSeconds: 60 }), waitingSeenAt: "2026-01-01T00:00:00Z", reason: "WaitTimeout" },
    { name: "wait timeout ahead sets the deadline", claim: base({ waitTimeoutSeconds: 90 }), waitingSeenAt: "2026-01-01T00:00:00Z", deadline: "2026-01-01T00:01:30Z" },
    {
      name: "a creationTimestamp far behind this clock (a skewed operator) does not time out a claim first seen waiting now",
      claim: base({ waitTimeoutSeconds: 60 }, {}, { creationTimestamp: "2025-12-31T20:00:00Z" }), deadline: "2026-01-01T00:02:00Z",
    },
    { name: "terminal claims are left alone", claim: base({ podName: "p", waitTimeoutSeconds: 1 }, { phase: "Expired" }), pod: { exists: false } },
  ];
  for (const row of table) {
    test(row.name, () => {
      const seen = (at?: string) => (at ? Date.parse(at) : undefined);
      const facts = assessClaim(row.claim, row.pod, now, seen(row.heartbeatSeenAt), seen(row.waitingSeenAt));
      assert.equal(facts.end?.reason, row.reason);
      assert.equal(facts.blocked ?? false, row.blocked ?? false);
      assert.equal(facts.deadline, row.deadline ? Date.parse(row.deadline) : undefined);
    });
  }
});
