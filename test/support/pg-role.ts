/**
 * A PostgreSQL role of the test environment's server that must log in with its password (a member of
 * PASSWORD_LOGIN_GROUP: test/env/services.ts), for tests of `postgresql.passwordFile`. It may create its tables in
 * the public schema. Managed as the trusted `postgres` role.
 */
import pg from "pg";
import { PASSWORD_LOGIN_GROUP } from "../env/services";
import { testEnv } from "./env";

export interface PasswordRole {
  /** postgres://NAME@host:port/postgres (no password: it comes from a file). */
  url: string;
  /** ALTER ROLE ... PASSWORD: new logins need it; sessions already open go on. */
  setPassword(password: string): Promise<void>;
  /** Ends the role's sessions (as a server restart does); resolves how many there were. */
  endSessions(): Promise<number>;
}

async function asPostgres<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: testEnv.postgresqlUrl });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

/** Creates role `name` (lower-case letters, digits, _) with `password`. */
export async function passwordRole(name: string, password: string): Promise<PasswordRole> {
  await asPostgres(async (sql) => {
    // The group is made by whichever test needs it first (more may do so at once).
    await sql.query(`DO $$ BEGIN CREATE ROLE ${PASSWORD_LOGIN_GROUP} NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$`);
    await sql.query(`CREATE ROLE ${name} LOGIN PASSWORD ${sql.escapeLiteral(password)} IN ROLE ${PASSWORD_LOGIN_GROUP}`);
    await sql.query(`GRANT USAGE, CREATE ON SCHEMA public TO ${name}`);
  });
  const url = new URL(testEnv.postgresqlUrl);
  url.username = name;
  return {
    url: url.toString(),
    setPassword: (next) => asPostgres(async (sql) => void (await sql.query(`ALTER ROLE ${name} PASSWORD ${sql.escapeLiteral(next)}`))),
    endSessions: () => asPostgres(async (sql) =>
      (await sql.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", [name])).rowCount ?? 0),
  };
}
