/**
 * What every backend's settings parser repeats, in one place: unknown fields, durations in milliseconds,
 * files read at start-up (named in messages, their contents never shown), credential files, TLS blocks.
 *
 * Contract: each mistake becomes one line, prefixed with the settings block (`redis.url ...`); nothing
 * throws until `done(name)`, which throws every line at once as one BackendConfigError whose lines each
 * name the backend (`backend "<name>": ...`), so a user fixes all mistakes in one go.
 */
import { readFileSync } from "node:fs";
import { BackendConfigError } from "../backend";
import { secretText } from "./secret-file";
import type { TlsMaterial, TlsPaths } from "./tls-files";

/** A `tls:` block: its certificate material as read at start (undefined fields were not configured) and where from. */
export interface TlsSettings extends TlsMaterial {
  /** With `allowInsecure`: false when `insecureSkipVerify: true` (server certificates not checked). */
  rejectUnauthorized: boolean;
  /** The files, to be read again when a rotated Secret may have replaced them (tls-files.ts). */
  files: TlsPaths;
}

export class SettingsCheck {
  private readonly problems: string[] = [];

  /** `block`: the settings block's name in messages, the type (`redis`). */
  constructor(private readonly block: string) {}

  /** Records a mistake (without the block prefix: `problem("redis.url is required")`). */
  problem(text: string): void {
    this.problems.push(text);
  }

  /** One line per field left over after the known ones were taken out (`...rest`). */
  unknown(rest: Record<string, unknown>, path = this.block): void {
    for (const field of Object.keys(rest)) this.problem(`unknown setting ${path}.${field}`);
  }

  /** A whole number of milliseconds: positive, or at least `min` when given. */
  milliseconds(field: string, value: unknown, min?: number): void {
    if (min === undefined && (!Number.isInteger(value) || (value as number) <= 0)) {
      this.problem(`${this.block}.${field} must be a positive integer (milliseconds)`);
    } else if (min !== undefined && (!Number.isInteger(value) || (value as number) < min)) {
      this.problem(`${this.block}.${field} must be an integer >= ${min} (milliseconds)`);
    }
  }

  /** The file's bytes, or undefined with a problem naming the field and the path (never the contents). */
  file(field: string, path: unknown): Buffer | undefined {
    if (typeof path !== "string" || !path) return void this.problem(`${this.block}.${field} must be a file path`);
    try {
      return readFileSync(path);
    } catch (err) {
      this.problem(`${this.block}.${field}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? "error"}`);
      return undefined;
    }
  }

  /** A one-line secret from a file (a mounted Secret): its trailing newline dropped; an empty file is a mistake. */
  secret(field: string, path: unknown): string | undefined {
    const bytes = this.file(field, path);
    const text = bytes && secretText(bytes);
    if (text === "") this.problem(`${this.block}.${field} ${String(path)} is empty`);
    return text || undefined;
  }

  /**
   * A `tls:` mapping: its files (caFile, certFile + keyFile together) and, with `allowInsecure`, the
   * `insecureSkipVerify` switch; other fields are unknown. Undefined when it is no mapping.
   */
  tls(raw: unknown, options: { allowInsecure?: boolean } = {}): TlsSettings | undefined {
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return void this.problem(`${this.block}.tls must be a mapping`);
    const { caFile, certFile, keyFile, ...rest } = raw as Record<string, unknown>;
    const { insecureSkipVerify = false, ...unknown } = options.allowInsecure ? rest : { ...rest, insecureSkipVerify: undefined };
    this.unknown(options.allowInsecure ? unknown : rest, `${this.block}.tls`);
    if (typeof insecureSkipVerify !== "boolean") this.problem(`${this.block}.tls.insecureSkipVerify must be true or false`);
    if ((certFile === undefined) !== (keyFile === undefined)) this.problem(`${this.block}.tls.certFile and ${this.block}.tls.keyFile go together`);
    const read = (field: string, path: unknown) => (path === undefined ? undefined : this.file(`tls.${field}`, path));
    const files = { caFile, certFile, keyFile } as TlsPaths; // each one read above: a string, or a problem recorded
    return { ca: read("caFile", caFile), cert: read("certFile", certFile), key: read("keyFile", keyFile), rejectUnauthorized: insecureSkipVerify !== true, files };
  }

  /** Throws every recorded mistake as one BackendConfigError for backend `name`; returns when there is none. */
  done(name: string): void {
    if (this.problems.length > 0) throw new BackendConfigError(this.problems.map((p) => `backend "${name}": ${p}`).join("\n"));
  }
}
