/**
 * `kubelock renew`: the holder's heartbeat in heartbeat mode (spec.leaseDurationSeconds). Moves
 * spec.renewTime to now, once or `--every D` until killed.
 */
import { TERMINAL_PHASES, type LockClaim } from "../api/types";
import {
  CliError, COMMON_FLAGS_HELP, EXIT_CODES_HELP, Exit, command, connect, describeError, durationFlag, grantedCondition,
  parseFlags, podIdentity, renewClaim, sleep, usageError, type Cluster,
} from "./common";
import { formatDuration } from "./duration";

export const renewHelp = `Usage: kubelock renew [flags]

Heartbeat for a claim in heartbeat mode (spec.leaseDurationSeconds): sets spec.renewTime to now. The
holder must renew within the lease or the operator ends the grant (phase Expired). With --every,
keeps renewing until killed (SIGTERM/SIGINT exit 0); a renewal the API server refuses for a passing
reason is retried at the next tick.

Flags:
      --claim NAME         the LockClaim (default: POD_NAME, from the downward API)
      --every D            keep renewing at this interval, e.g. 5s (a third of the lease is a good choice)
${COMMON_FLAGS_HELP}

${EXIT_CODES_HELP}`;

/** Renews once; a claim that has ended is exit 4 (renewing cannot bring it back). */
async function renewOnce(cluster: Cluster, name: string): Promise<LockClaim> {
  const claim = await renewClaim(cluster, name);
  const phase = claim.status?.phase;
  if (phase && TERMINAL_PHASES.includes(phase)) {
    const condition = grantedCondition(claim);
    throw new CliError(`claim ${name} has ended (phase ${phase}${condition ? `, ${condition.reason}: ${condition.message}` : ""}); renewing cannot bring it back`, Exit.ClaimEnded);
  }
  return claim;
}

export const renewCommand = command("renew", async (argv) => {
  const { values } = parseFlags(argv, { claim: { type: "string" }, every: { type: "string" } });
  if (values.help) {
    console.log(renewHelp);
    return 0;
  }
  const claimName = values.claim ?? podIdentity().name;
  if (!claimName) throw usageError("--claim NAME is required when POD_NAME is not set");
  const everyMs = durationFlag(values.every, "--every");
  if (everyMs !== undefined && everyMs < 100) throw usageError("--every must be at least 100ms");
  const cluster = connect(values);

  const first = await renewOnce(cluster, claimName);
  if (!first.spec.leaseDurationSeconds) {
    console.error(`kubelock renew: note: claim ${claimName} has no spec.leaseDurationSeconds, so renewTime is not checked`);
  }
  if (everyMs === undefined) {
    console.log(`renewed claim ${claimName} (renewTime ${first.spec.renewTime})`);
    return 0;
  }
  console.log(`renewing claim ${claimName} every ${formatDuration(everyMs)} until stopped`);
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.once("SIGTERM", onSignal);
  process.once("SIGINT", onSignal);
  while (!stop.signal.aborted) {
    await sleep(everyMs, stop.signal);
    if (stop.signal.aborted) break;
    try {
      await renewOnce(cluster, claimName);
    } catch (err) {
      if (err instanceof CliError && err.code !== Exit.Unexpected) throw err; // ended, gone, forbidden: no use retrying
      console.error(`kubelock renew: renewal failed, retrying in ${formatDuration(everyMs)}: ${err instanceof CliError ? err.message : describeError(err)}`);
    }
  }
  return 0;
});
