/** metav1.Condition helpers, with the API machinery's rule: lastTransitionTime moves only when status does. */
import type { Condition } from "./types";

export type NewCondition = Omit<Condition, "lastTransitionTime">;

/** Returns `conditions` with `next` set in place of any condition of its type. */
export function setCondition(conditions: Condition[] | undefined, next: NewCondition, now: string): Condition[] {
  const list = conditions ?? [];
  const current = list.find((c) => c.type === next.type);
  const lastTransitionTime = current && current.status === next.status ? current.lastTransitionTime : now;
  const updated: Condition = { ...next, lastTransitionTime };
  return current ? list.map((c) => (c === current ? updated : c)) : [...list, updated];
}

export function findCondition(conditions: Condition[] | undefined, type: string): Condition | undefined {
  return conditions?.find((c) => c.type === type);
}
