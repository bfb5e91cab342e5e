/**
 * A backend client's TLS material as it is in its files (a mounted Secret), read again on demand so that a rotated
 * client certificate, key or CA is used without a restart. The backends ask at a failure that a refused
 * certificate causes (a call or connection failing as unavailable) and rebuild their connections on what it returns.
 *
 * Contract: `reload()` reads every configured file; it returns the new material only when some file's contents
 * differ from the material in use AND the set is usable (each PEM parses, the key belongs to the certificate);
 * otherwise undefined: unchanged, unreadable, or caught between two writes of a Secret update (the caller keeps
 * what it has and asks again at its next failure). The material it returned is the one in use from then on.
 * Nothing read is ever passed on except as the returned material: no contents in messages or logs.
 */
import { readFileSync } from "node:fs";
import { createSecureContext } from "node:tls";

/** PEM contents; undefined fields were not configured. */
export interface TlsMaterial {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

/** Where each configured part of the material is read from. */
export interface TlsPaths {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

export class TlsFiles {
  constructor(private readonly paths: TlsPaths, private inUse: TlsMaterial) {}

  get material(): TlsMaterial {
    return this.inUse;
  }

  reload(): TlsMaterial | undefined {
    const read = (path?: string) => (path === undefined ? undefined : readFileSync(path));
    try {
      const next: TlsMaterial = { ca: read(this.paths.caFile), cert: read(this.paths.certFile), key: read(this.paths.keyFile) };
      const parts = ["ca", "cert", "key"] as const;
      if (parts.every((part) => sameBytes(next[part], this.inUse[part]))) return undefined;
      createSecureContext(next); // throws on a PEM that does not parse or a key that is not the certificate's
      this.inUse = next;
      return next;
    } catch {
      return undefined;
    }
  }
}

function sameBytes(a: Buffer | undefined, b: Buffer | undefined): boolean {
  return a === undefined || b === undefined ? a === b : a.equals(b);
}
