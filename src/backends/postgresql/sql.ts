/**
 * The PostgreSQL backend's statements, one per operation. Every change runs in one transaction that first
 * takes the lock key's advisory transaction lock (so changes to one key are serialized across every
 * operator), and judges expiry on the server's `clock_timestamp()`, so all operators agree. `$1` is always
 * the lock key `<namespace>/<key>`; table names come from the settings (`<table>` and `<table>_fencing`).
 */

/**
 * The tables, created on first use: holds by (key, holder), waiters by (key, holder) in the order they joined
 * (`seq`), and a fencing counter per key that goes only with its lock (`forget`).
 */
export const schema = (t: string) => `
CREATE TABLE IF NOT EXISTS ${t} (
  lock_key text NOT NULL, holder_id text NOT NULL, claim text NOT NULL, holder_identity text NOT NULL,
  cluster text NOT NULL, fencing_token numeric(30) NOT NULL, acquire_time timestamptz NOT NULL,
  renew_time timestamptz NOT NULL, expires_at timestamptz NOT NULL, PRIMARY KEY (lock_key, holder_id));
CREATE TABLE IF NOT EXISTS ${t}_queue (
  lock_key text NOT NULL, holder_id text NOT NULL, claim text NOT NULL, holder_identity text NOT NULL,
  cluster text NOT NULL, seq bigint GENERATED ALWAYS AS IDENTITY, expires_at timestamptz NOT NULL,
  PRIMARY KEY (lock_key, holder_id));
CREATE TABLE IF NOT EXISTS ${t}_fencing (lock_key text PRIMARY KEY, last_token numeric(30) NOT NULL);`;

/** Serializes this transaction with every other change to the key. */
export const LOCK_KEY = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))";

/** Drops the key's expired holds and waiters; the row count says how many holds went. */
export const purge = (t: string) => `
WITH waiters AS (DELETE FROM ${t}_queue WHERE lock_key = $1 AND expires_at <= clock_timestamp())
DELETE FROM ${t} WHERE lock_key = $1 AND expires_at <= clock_timestamp()`;

/** The key's live waiters, in the order they joined. */
export const waiting = (t: string) => `SELECT holder_id, claim, holder_identity, cluster FROM ${t}_queue
  WHERE lock_key = $1 AND expires_at > clock_timestamp() ORDER BY seq`;

/** Adds holder $2 at the back of the key's queue, or keeps its place; either way it expires $6 ms from now. */
export const enqueue = (t: string) => `
INSERT INTO ${t}_queue (lock_key, holder_id, claim, holder_identity, cluster, expires_at)
  VALUES ($1, $2, $3, $4, $5, clock_timestamp() + $6 * interval '1 millisecond')
  ON CONFLICT (lock_key, holder_id) DO UPDATE SET expires_at = EXCLUDED.expires_at`;

/** Withdraws holder $2 from the key's queue. */
export const dequeue = (t: string) => `DELETE FROM ${t}_queue WHERE lock_key = $1 AND holder_id = $2`;

const COLUMNS = "holder_id, claim, holder_identity, cluster, fencing_token::text AS fencing_token, acquire_time, renew_time";

/** The key's live holds, by token. */
export const holders = (t: string) =>
  `SELECT ${COLUMNS} FROM ${t} WHERE lock_key = $1 AND expires_at > clock_timestamp() ORDER BY fencing_token`;

/**
 * The next token: above the counter and above the caller's floor ($2). A counter that is missing (first use,
 * or lost with the database's data) starts from the server's clock in microseconds, as the Redis backend's.
 */
export const nextToken = (t: string) => `
INSERT INTO ${t}_fencing AS f (lock_key, last_token)
  VALUES ($1, GREATEST($2::numeric, floor(extract(epoch FROM clock_timestamp()) * 1000000)) + 1)
  ON CONFLICT (lock_key) DO UPDATE SET last_token = GREATEST(f.last_token, $2::numeric) + 1
  RETURNING last_token::text AS token`;

/**
 * Deletes the key's counter row when the key has no hold and no waiter row left (run after `purge`, under the
 * key's advisory lock) and the counter is not ahead of the server's clock in microseconds, where `nextToken`
 * restarts a missing one (a caller's floor can have raised it further). The row count says whether it went.
 */
export const forget = (t: string) => `
DELETE FROM ${t}_fencing WHERE lock_key = $1
  AND NOT EXISTS (SELECT 1 FROM ${t} WHERE lock_key = $1)
  AND NOT EXISTS (SELECT 1 FROM ${t}_queue WHERE lock_key = $1)
  AND last_token <= floor(extract(epoch FROM clock_timestamp()) * 1000000)`;

/** $2 holder, $3 claim, $4 identity, $5 cluster, $6 token, $7 lease (ms). */
export const insertHold = (t: string) => `
INSERT INTO ${t} (lock_key, holder_id, claim, holder_identity, cluster, fencing_token, acquire_time, renew_time, expires_at)
  VALUES ($1, $2, $3, $4, $5, $6::numeric, clock_timestamp(), clock_timestamp(), clock_timestamp() + $7 * interval '1 millisecond')
  RETURNING ${COLUMNS}`;

/** Extends holder $2's live hold by $3 ms from now. */
export const renew = (t: string) => `
UPDATE ${t} SET renew_time = clock_timestamp(), expires_at = clock_timestamp() + $3 * interval '1 millisecond'
  WHERE lock_key = $1 AND holder_id = $2 AND expires_at > clock_timestamp() RETURNING ${COLUMNS}`;

/** Removes holder $2's hold (owner-checked by the holder id). */
export const release = (t: string) => `DELETE FROM ${t} WHERE lock_key = $1 AND holder_id = $2`;

/** Tells every listening operator that the key's holds changed (the payload is the key). */
export const NOTIFY = "SELECT pg_notify('kubelock_holds', $1)";
export const LISTEN = "LISTEN kubelock_holds";
