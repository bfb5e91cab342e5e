/**
 * `kubelock release`: the holder is done. Annotates the claim `kubelock.io/release: "true"`; the
 * operator ends the grant (phase Released, the backend hold released, the next claim granted). Waits
 * until the operator shows that.
 */
import { RELEASE_ANNOTATION, TERMINAL_PHASES, type LockClaim } from "../api/types";
import { untilClaim } from "./claim-watch";
import {
  CliError, COMMON_FLAGS_HELP, EXIT_CODES_HELP, Exit, annotateRelease, command, connect, durationFlag, parseFlags,
  podIdentity, usageError,
} from "./common";
import { formatDuration } from "./duration";

export const releaseHelp = `Usage: kubelock release [flags]

Ends this pod's grant (or a waiting claim's place in the queue): sets the annotation
${RELEASE_ANNOTATION}: "true" on the LockClaim, then waits until the operator shows phase Released.
The claim stays (with its final status) until it or its pod is deleted; a claim that has ended
cannot be granted again.

Flags:
      --claim NAME         the LockClaim (default: POD_NAME, from the downward API)
      --timeout D          how long to wait for the operator, e.g. 30s, 2m (default 30s)
${COMMON_FLAGS_HELP}

${EXIT_CODES_HELP}`;

const ended = (claim: LockClaim | undefined) => !claim || (claim.status?.phase !== undefined && TERMINAL_PHASES.includes(claim.status.phase));

export const releaseCommand = command("release", async (argv) => {
  const { values } = parseFlags(argv, { claim: { type: "string" }, timeout: { type: "string" } });
  if (values.help) {
    console.log(releaseHelp);
    return 0;
  }
  const claimName = values.claim ?? podIdentity().name;
  if (!claimName) throw usageError("--claim NAME is required when POD_NAME is not set");
  const timeoutMs = durationFlag(values.timeout, "--timeout") ?? 30_000;
  const cluster = connect(values);

  const patched = await annotateRelease(cluster, claimName);
  const lockName = patched.spec.lockName;
  if (ended(patched)) {
    console.log(`claim ${claimName} had already ended (phase ${patched.status!.phase}); lock ${lockName} is not held by it`);
    return 0;
  }
  const result = await untilClaim(cluster, claimName, (claim) => (ended(claim) ? { claim } : undefined), timeoutMs);
  if ("timedOut" in result) {
    throw new CliError(`timed out after ${formatDuration(timeoutMs)} waiting for the operator to release claim ${claimName} (phase ${result.last?.status?.phase ?? "unknown"}); is the kubelock operator running? The annotation stays set, so the release still happens`, Exit.Timeout);
  }
  const phase = result.value.claim?.status?.phase;
  console.log(`released lock ${lockName} (claim ${claimName}${phase && phase !== "Released" ? `, phase ${phase}` : ""})`);
  return 0;
});
