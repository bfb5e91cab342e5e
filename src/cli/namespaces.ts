/** Namespace names given on the command line. */

/** A namespace name: a DNS-1123 label (lower-case letters, digits, '-'; at most 63 characters). */
export const NAMESPACE_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/**
 * The namespaces of a flag that may be repeated and holds comma-separated names (`--flag a,b --flag c`),
 * in the order given; none given: []. Each mistake (an empty name, one that is not a namespace name, a name
 * given twice) is one line of `problems`, prefixed with `--flag`.
 */
export function namespaceList(flag: string, values: readonly string[] = []): { namespaces: string[]; problems: string[] } {
  const namespaces: string[] = [];
  const problems: string[] = [];
  for (const name of values.flatMap((value) => value.split(",")).map((n) => n.trim())) {
    if (name === "") problems.push(`--${flag}: an empty namespace name (write names separated by single commas)`);
    else if (!NAMESPACE_NAME.test(name)) problems.push(`--${flag}: ${JSON.stringify(name.slice(0, 64))} is not a namespace name (lower-case letters, digits and '-', at most 63)`);
    else if (namespaces.includes(name)) problems.push(`--${flag}: namespace "${name}" is given twice`);
    else namespaces.push(name);
  }
  return { namespaces, problems };
}
