/** The labels every kubelock Lease carries (the cache and the admission policy select by them). */
export const MANAGED_BY_LABEL = "app.kubernetes.io/managed-by";
export const MANAGED_BY = "kubelock";
export const KEY_LABEL = "kubelock.io/key";
export const ROLE_LABEL = "kubelock.io/role";
export const ROLE_SLOT = "slot";
export const ROLE_WAITER = "waiter";
/** The per-key fencing counter of earlier versions (read for upgrades, never written). */
export const ROLE_COUNTER = "fencing-counter";
