/**
 * `half-open-holder`: a `kubelock run` holder whose API connection goes half-open while its command is in
 * its critical section: its relay to the API server stops relaying with the connections left open, for
 * longer than twice its heartbeat lease, and the section server keeps the command inside (never tells it
 * to leave) meanwhile. `kubelock run` must stop the command by its own deadline; if it does not, the
 * command's section overlaps the next holder's in the fenced register.
 */
import { now, sleep } from "../util";
import type { Injector } from "./types";

export const halfOpenHolder: Injector = async (ctx) => {
  const holders = ctx.holders;
  if (!holders || !ctx.take("holder")) return undefined;
  const deadline = now() + 30_000;
  while (now() < deadline) {
    const inside = new Set(holders.server.claimsInside);
    const holder = ctx.random.shuffle(holders.all).find((h) => h.claim && inside.has(h.claim));
    const claim = holder?.claim;
    if (holder && claim && holders.server.hold(claim)) {
      ctx.record(`${holder.id} (${claim})`);
      const heal = holder.partition();
      return {
        holdMs: 2 * ctx.lockLeaseMs + ctx.random.int(1000, 2500),
        heal: async () => {
          heal();
          holders.server.release(claim);
        },
      };
    }
    await sleep(100);
  }
  ctx.record("holder", "no `kubelock run` command was inside its critical section within 30 s");
  return undefined;
};
