/**
 * A one-line secret kept in a file (a mounted Secret), read again on demand so that a rotated Secret is used
 * without a restart. The same rule reads it at start-up (SettingsCheck.secret) and later.
 *
 * Contract: `reload()` returns the file's contents only when they differ from those in use and `valid` accepts
 * them; they are the ones in use from then on. Otherwise undefined: unchanged, unreadable or empty (caught
 * between two writes of a Secret update: asked again later), or invalid. `onInvalid` hears of each distinct
 * invalid contents once, given the path only: the contents are never passed on, logged or put in a message.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";

/** A secret file's bytes as the secret: UTF-8, its one trailing newline dropped. */
export function secretText(bytes: Buffer): string {
  return bytes.toString("utf8").replace(/\r?\n$/, "");
}

export interface SecretFileOptions {
  /** Whether new contents are usable (`user:password`, say); invalid contents are never used. */
  valid?: (text: string) => boolean;
  /** Told once per distinct invalid contents, with the file's path. */
  onInvalid?: (path: string) => void;
}

export class SecretFile {
  /** A hash of the invalid contents last reported, so each is reported once (the contents are not kept). */
  private rejected?: string;

  constructor(readonly path: string, private inUse: string, private readonly options: SecretFileOptions = {}) {}

  /** The contents in use. */
  get value(): string {
    return this.inUse;
  }

  reload(): string | undefined {
    let text: string;
    try {
      text = secretText(readFileSync(this.path));
    } catch {
      return undefined;
    }
    if (!text || text === this.inUse) return undefined;
    if (this.options.valid && !this.options.valid(text)) {
      const hash = createHash("sha256").update(text).digest("hex");
      if (hash !== this.rejected) this.options.onInvalid?.(this.path);
      this.rejected = hash;
      return undefined;
    }
    this.rejected = undefined;
    this.inUse = text;
    return text;
  }
}
