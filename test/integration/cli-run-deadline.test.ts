/**
 * `kubelock run` stops its command by its own deadline: when no renewal has been confirmed for the
 * lease minus a margin it stops the command's whole process group, even with the API server
 * unreachable or the connection half-open (a relay that stops relaying while connections stay open),
 * and it never leaves a process of the group behind, lost grant or not. Real API server and operator;
 * the CLI reaches the API server through a loopback TcpProxy.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { test } from "node:test";
import * as k8s from "@kubernetes/client-node";
import { CLAIM_PLURAL, GROUP, VERSION, type LockClaim } from "../../src/api/types";
import { watchClaim } from "../../src/cli/claim-watch";
import { connect } from "../../src/cli/common";
import { endedWithin, grantedRunClaim, kubeconfigFile, running, show, startCli, type CliProcess } from "../support/cli";
import { eventually, kubeConfig, kubeConfigFor } from "../support/env";
import { useOperatorNamespace } from "../support/operator";
import { TcpProxy } from "../support/tcp-proxy";
import { tempDir } from "../support/temp";

const ctx = useOperatorNamespace("cli-run-deadline");
const LEASE_MS = 4000;

/** A fresh proxy in front of the API server and a kubeconfig file through it, for one test; stopped after it. */
async function withProxy<T>(body: (proxy: TcpProxy, kubeconfig: string) => Promise<T>): Promise<T> {
  const server = new URL(kubeConfig().getCurrentCluster()!.server);
  const proxy = new TcpProxy(server.hostname, Number(server.port || 443));
  await proxy.start();
  try {
    return await body(proxy, kubeconfigFile(kubeConfigFor(`https://${proxy.address}`)));
  } finally {
    await proxy.stop();
  }
}

/** Kills whatever a failed test left running (the run, its command's processes), so the file can end. */
function cleanUp(run: CliProcess, pidFile: string): void {
  if (run.child.exitCode === null && run.child.signalCode === null) run.child.kill("SIGKILL");
  for (const pid of pidsWritten(pidFile).filter(running)) process.kill(pid, "SIGKILL");
}

/**
 * A shell that starts two background sleeps and waits, writing the pids of all three to a file;
 * with `ignoreTerm` all three ignore SIGTERM, so only SIGKILL stops them.
 */
function groupScript(ignoreTerm: boolean): { pidFile: string; command: string[] } {
  const pidFile = join(tempDir("kubelock-run-pids-"), "pids");
  const trap = ignoreTerm ? "trap '' TERM; " : "";
  const script = `${trap}sleep 1000 & echo $! >> ${pidFile}; sleep 1000 & echo $! >> ${pidFile}; echo $$ >> ${pidFile}; wait`;
  return { pidFile, command: ["sh", "-c", script] };
}

/** The pids written to `file` so far. */
function pidsWritten(file: string): number[] {
  try {
    return readFileSync(file, "utf8").trim().split("\n").filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

const pidsIn = (file: string, count: number) => eventually(`${count} pids in ${file}`, () => {
  const pids = pidsWritten(file);
  return pids.length === count ? pids : undefined;
});

const survivors = (pids: number[]) => pids.filter(running);

interface Cut {
  claim: LockClaim;
  /** Wall-clock time at which no process of the group was seen any more. */
  stoppedAt: number;
  /** Milliseconds from the fault to that moment. */
  elapsed: number;
}

/**
 * Runs `kubelock run` through a proxy with a 4 s lease, waits until its command runs and one renewal
 * after the grant went through, then applies `fault` to the proxy and checks that the whole group is
 * gone within the lease plus a small bound, and that run exits 4 naming its deadline.
 */
async function cutOffWhileHolding(lock: string, fault: (proxy: TcpProxy) => Promise<void> | void, ignoreTerm: boolean): Promise<Cut> {
  const { api, namespace } = ctx;
  await api.createLock(lock);
  const { pidFile, command } = groupScript(ignoreTerm);
  return withProxy(async (proxy, kubeconfig) => {
    const run = startCli(["run", "--lock", lock, "--lease-duration", `${LEASE_MS / 1000}s`, "--grace-period", "1m", "--kubeconfig", kubeconfig, "-n", namespace, "--", ...command]);
    try {
      const claim = await grantedRunClaim(api, lock);
      const pids = await pidsIn(pidFile, 3);
      await api.waitForClaim(claim.metadata.name, "renewed through the proxy after the grant", (c) =>
        Date.parse(c.spec.renewTime ?? "0") > Date.parse(c.status?.acquireTime ?? "0"));
      assert.deepEqual(survivors(pids), pids, "the shell and both sleeps run while the lock is held");

      const cutAt = performance.now();
      await fault(proxy);
      // Polled every 20 ms: the time seen is at most that much after the last process died.
      while (survivors(pids).length > 0 && performance.now() - cutAt < LEASE_MS + 10_000) await new Promise((r) => setTimeout(r, 20));
      const stoppedAt = Date.now();
      const elapsed = performance.now() - cutAt;
      assert.deepEqual(survivors(pids), [], `processes of the group still run ${Math.round(elapsed)}ms after the cut\n${run.stderr()}`);
      assert.ok(elapsed < LEASE_MS + 1500, `the group was stopped ${Math.round(elapsed)}ms after the cut, more than the ${LEASE_MS}ms lease + 1.5s\n${run.stderr()}`);

      const result = await endedWithin(run, 30_000);
      assert.equal(result.code, 4, show(result));
      assert.match(result.stderr, /lost lock \S+: no renewal was confirmed for 3s \(the lease minus a margin of 1s\)/);
      return { claim, stoppedAt, elapsed };
    } finally {
      cleanUp(run, pidFile);
    }
  });
}

test("a holder whose API connection goes half-open kills its whole group by the deadline, before the operator ends the grant", async (t) => {
  // Every process ignores SIGTERM and the grace period is a minute: only the deadline's SIGKILL can stop them in time.
  const { claim, stoppedAt, elapsed } = await cutOffWhileHolding("halfopen", (proxy) => proxy.blackhole(), true);
  t.diagnostic(`group gone ${Math.round(elapsed)}ms after the cut (lease ${LEASE_MS}ms)`);
  // The operator, which still reaches the API server, ends the grant only after the lease: by then nothing runs.
  const expired = await ctx.api.waitForPhase(claim.metadata.name, "Expired");
  assert.ok(stoppedAt <= Date.parse(expired.status!.releaseTime!),
    `the group was gone (seen at ${new Date(stoppedAt).toISOString()}) before the grant ended (${expired.status!.releaseTime})`);
});

test("a holder that cannot reach the API server at all stops its whole group by the deadline", async (t) => {
  const { claim, elapsed } = await cutOffWhileHolding("refused", (proxy) => proxy.stop(), false);
  t.diagnostic(`group gone ${Math.round(elapsed)}ms after the cut (lease ${LEASE_MS}ms)`);
  await ctx.api.waitForPhase(claim.metadata.name, "Expired");
});

test("a lost grant (claim deleted) stops the background children of the command too", async () => {
  const { api, namespace } = ctx;
  await api.createLock("deleted");
  const { pidFile, command } = groupScript(false);
  const run = startCli(["run", "--lock", "deleted", "--grace-period", "30s", "-n", namespace, "--", ...command]);
  try {
    const claim = await grantedRunClaim(api, "deleted");
    const pids = await pidsIn(pidFile, 3);
    assert.deepEqual(survivors(pids), pids);

    await api.deleteClaim(claim.metadata.name);
    const result = await endedWithin(run, 30_000);
    assert.equal(result.code, 4, show(result));
    assert.match(result.stderr, /lost lock deleted: claim deleted-run-\w+ (was deleted|is being deleted)/);
    assert.deepEqual(survivors(pids), [], "kubelock run returns only once every process of the group is gone");
  } finally {
    cleanUp(run, pidFile);
  }
});

test("a command that exits leaving children behind: they are stopped before the lock is released", async () => {
  const { api, namespace } = ctx;
  await api.createLock("leftover");
  const pidFile = join(tempDir("kubelock-run-pids-"), "pids");
  const run = startCli(["run", "--lock", "leftover", "-n", namespace, "--", "sh", "-c", `sleep 1000 & echo $! > ${pidFile}; exit 3`]);
  try {
    const result = await endedWithin(run, 30_000);
    assert.equal(result.code, 3, show(result));
    const [child] = await pidsIn(pidFile, 1);
    assert.equal(running(child), false, "the background sleep is gone");
    assert.match(result.stderr, /sh exited; stopping the processes it left in its process group/);
  } finally {
    cleanUp(run, pidFile);
  }
  await eventually("the run's claim is gone", async () => ((await api.listClaims()).some((c) => c.spec.lockName === "leftover") ? undefined : true));
});

test("the claim watch restarts from a list when its stream goes silent", async () => {
  const { api, namespace } = ctx;
  await api.createLock("watched");
  await api.createClaim("watched", { lockName: "watched" });
  await withProxy(async (proxy, kubeconfig) => {
    const seen: (LockClaim | undefined)[] = [];
    const watch = watchClaim(connect({ kubeconfig, namespace }, 2000), "watched", (c) => seen.push(c), (err) => assert.fail(err.message), { idleMs: 3000 });
    try {
      await eventually("the claim listed", () => (seen.length > 0 ? true : undefined));
      // The open stream (and every pooled connection) goes mute for good; new connections work again.
      proxy.blackhole();
      proxy.restore();
      await api.custom.patchNamespacedCustomObject(
        { group: GROUP, version: VERSION, namespace, plural: CLAIM_PLURAL, name: "watched", body: { metadata: { labels: { changed: "yes" } } } },
        k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch),
      );
      await eventually("the change seen through a new stream", () => (seen.at(-1)?.metadata.labels?.changed === "yes" ? true : undefined), 20_000);
    } finally {
      watch.stop();
    }
  });
});
