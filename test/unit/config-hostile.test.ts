/**
 * Hostile operator configs: `kubelock operator --config FILE` must stop start-up quickly with exit code
 * 2 and one line per mistake, never echo an inline credential, never print an unbounded line, and never
 * let YAML alias expansion (billion laughs) or deep nesting hang it.
 *
 * Two layers answer: src/config.ts (shape: types, names, required settings; the CLI prints "invalid
 * config FILE:" then one "  - <mistake>" line each) and each backend's settings parser, run by the
 * registry at start-up (timeouts, files, URL details; lines `backend "<name>": <mistake>`). Both are
 * bad config, so both must exit 2 (`kubelock operator --help`: "2 bad flags or config").
 *
 * Every case is checked in-process against the layer that answers it (cheap), and the real CLI is run
 * for what only a process shows: the exit code, the exact output (warnings included) and the time it
 * takes. No cluster is needed: the config is rejected before anything connects. The kubeconfig points
 * at a closed port, so a config that is (wrongly) accepted shows up as an operator that keeps running.
 *
 * Tests named [BUG X] fail against the current product on purpose; the lead has the description.
 */
import assert from "node:assert/strict";
import { configProblems } from "../support/config";
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { KubeConfig } from "@kubernetes/client-node";
import { BackendConfigError } from "../../src/backends/backend";
import { createBackend } from "../../src/backends/registry";
import { ConfigError, loadConfig, MAX_CONFIG_BYTES, parseConfig } from "../../src/config";
import { cliCommand } from "../support/cli-entry";

const repoRoot = resolve(__dirname, "..", "..");
/** A CLI still running after this long accepted the config (the machine may be busy: be generous). */
const CLI_LIMIT_MS = 60_000;
/** A line longer than this is no "clear line": the value was echoed whole. */
const MAX_LINE = 2_000;

const fakeKubeconfig = [
  "apiVersion: v1",
  "kind: Config",
  "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]",
  "users: [{name: u, user: {token: not-a-real-token}}]",
  "contexts: [{name: x, context: {cluster: c, user: u}}]",
  "current-context: x",
  "",
].join("\n");

let dir: string;
let kubeconfigFile: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), "kubelock-config-hostile-"));
  kubeconfigFile = join(dir, "kubeconfig");
  writeFileSync(kubeconfigFile, fakeKubeconfig);
});

after(() => rmSync(dir, { recursive: true, force: true }));

// ---------------------------------------------------------------------------------------------------
// Helpers

interface StartResult {
  /** Exit code, or "running" when the operator was still up after the limit (config accepted). */
  code: number | "running";
  output: string;
  ms: number;
}

let files = 0;

/**
 * Runs `kubelock operator --config FILE` and waits for it to exit; it is killed after `limitMs`, or as
 * soon as its output matches `stopWhen` (code "running" then too: it started).
 */
function startWith(config: string, options: { limitMs?: number; stopWhen?: RegExp } = {}): Promise<StartResult> {
  const file = join(dir, `config-${files++}.yaml`);
  writeFileSync(file, config);
  return startWithFile(file, options);
}

/** `kubelock operator --config FILE` for a file as it is (a device, a FIFO): see startWith. */
function startWithFile(file: string, { limitMs = CLI_LIMIT_MS, stopWhen }: { limitMs?: number; stopWhen?: RegExp } = {}): Promise<StartResult> {
  const args = [...cliCommand().args, "operator", "--kubeconfig", kubeconfigFile, "--metrics-bind-address", "0", "--health-probe-bind-address", "0", "--config", file];
  const started = Date.now();
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, args, { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    let killed = false;
    const kill = () => {
      killed = true;
      child.kill("SIGKILL");
    };
    const collect = (d: Buffer) => {
      output += d;
      if (stopWhen?.test(output) && !killed) kill();
    };
    child.stdout.on("data", collect);
    child.stderr.on("data", collect);
    const timer = setTimeout(kill, limitMs);
    child.on("error", fail);
    child.on("close", (code) => {
      clearTimeout(timer);
      done({ code: killed ? "running" : (code ?? -1), output, ms: Date.now() - started });
    });
  });
}

const describeRun = (r: StartResult) => `exit ${r.code} after ${r.ms}ms; output:\n${r.output.slice(0, 3000)}`;

/** The mistake lines the CLI printed: "  - ..." (config layer) or `backend "x": ...` (backend layer). */
function mistakeLines(output: string): string[] {
  return output.split("\n").filter((l) => /^ {2}- /.test(l) || /(^|: )backend "[^"]*": /.test(l));
}

/** Every 7-character piece of `secret` found in `text` (a piece longer than 6 characters is a leak). */
function leaks(text: string, secret: string): string[] {
  const found = new Set<string>();
  for (let i = 0; i + 7 <= secret.length; i++) {
    const piece = secret.slice(i, i + 7);
    if (text.includes(piece)) found.add(piece);
  }
  return [...found];
}

function assertNoLeak(text: string, secret: string, context: string): void {
  assert.ok(!text.includes(secret), `the inline secret is echoed: ${context}`);
  assert.deepEqual(leaks(text, secret), [], `pieces of the inline secret are echoed: ${context}`);
}

function assertBoundedLines(lines: string[]): void {
  const long = lines.filter((l) => l.length > MAX_LINE);
  assert.equal(long.length, 0, `${long.length} line(s) longer than ${MAX_LINE} characters; the first starts ${JSON.stringify(long[0]?.slice(0, 100))}`);
}


/** The backend layer's lines for one backend entry that passed the config layer (fails if it is built). */
async function backendProblems(entry: string): Promise<string[]> {
  const config = parseConfig(`backends: [${entry}]\n`, "test.yaml");
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromString(fakeKubeconfig);
  const [b] = config.backends;
  let built;
  try {
    built = await createBackend({ name: b.name, type: b.type, settings: b.settings, kubeConfig });
  } catch (err) {
    assert.ok(err instanceof BackendConfigError, `expected BackendConfigError, got ${err}`);
    return err.message.split("\n");
  }
  await built.close();
  assert.fail(`backend ${b.name} was built`);
}

const secret = (tag: string) => `${tag}-${Math.random().toString(36).slice(2, 10)}Zq`;

// ---------------------------------------------------------------------------------------------------
// The config layer (src/config.ts): one line per mistake, naming the field.

/** Billion laughs: 9 levels of 10 aliases each would expand to 10^9 strings. */
const billionLaughs = [
  "backends:",
  "  - name: a",
  "    type: kubernetes",
  "    kubernetes:",
  "      l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]",
  ...Array.from({ length: 8 }, (_, i) => `      l${i + 1}: &l${i + 1} [${Array(10).fill(`*l${i}`).join(", ")}]`),
  "",
].join("\n");

const inline = { redisHttp: secret("HttpSchemePw"), yamlSyntax: secret("SyntaxPw"), wrongType: secret("MappingPw") };

interface ConfigCase {
  name: string;
  config: string | (() => string);
  /** One pattern per mistake, in order. */
  lines: RegExp[];
  secret?: string;
  /** Parse time limit (ms). */
  withinMs?: number;
}

const configCases: ConfigCase[] = [
  // broken YAML
  { name: "tab indentation", config: "backends:\n\t- name: a\n\t  type: kubernetes\n", lines: [/^not valid YAML: Tabs are not allowed/] },
  { name: "duplicate mapping keys", config: "clusterName: east\nclusterName: west\n", lines: [/^not valid YAML: Map keys must be unique/] },
  { name: "several YAML documents", config: "clusterName: east\n---\nclusterName: west\n", lines: [/^not valid YAML: .*multiple documents/] },
  { name: "unclosed quote", config: 'clusterName: "east\nbackends: []\n', lines: [/^not valid YAML/] },
  { name: "billion laughs (alias expansion) is refused, not expanded", config: billionLaughs, lines: [/^not valid YAML: Excessive alias count/], withinMs: 2_000 },
  { name: "deeply nested flow sequences (50,000 levels)", config: `backends: ${"[".repeat(50_000)}${"]".repeat(50_000)}\n`, lines: [/^not valid YAML/], withinMs: 20_000 },
  { name: "deeply nested block mappings (5,000 levels)", config: Array.from({ length: 5_000 }, (_, i) => `${" ".repeat(i)}k${i}:`).join("\n"), lines: [/^not valid YAML/], withinMs: 20_000 },
  // wrong shapes and types
  { name: "a scalar document", config: "just a string\n", lines: [/^the top level must be a mapping/] },
  { name: "backends as a string", config: "backends: redis\n", lines: [/^backends: must be a list/] },
  { name: "backends as a mapping", config: "backends: {name: r, type: redis}\n", lines: [/^backends: must be a list/] },
  {
    name: "backend entries that are null, a number and a string",
    config: "backends: [null, 3, redis]\n",
    lines: [/^backends\[0\]: must be a mapping/, /^backends\[1\]: must be a mapping/, /^backends\[2\]: must be a mapping/],
  },
  { name: "backend without a type", config: "backends: [{name: a}]\n", lines: [/^backends\[0\]\.type: .* is not a backend type/] },
  { name: "settings block as a string", config: "backends: [{name: r, type: redis, redis: 'redis://x:6379'}]\n", lines: [/^backends\[0\]\.redis: must be a mapping/] },
  { name: "redis.url as a number", config: "backends: [{name: r, type: redis, redis: {url: 6379}}]\n", lines: [/^backends\[0\]\.redis\.url: must be a redis/] },
  { name: "redis.url missing", config: "backends: [{name: r, type: redis, redis: {keyPrefix: x}}]\n", lines: [/^backends\[0\]\.redis\.url: missing/] },
  { name: "etcd.endpoints as a string", config: "backends: [{name: e, type: etcd, etcd: {endpoints: 'http://x:2379'}}]\n", lines: [/^backends\[0\]\.etcd\.endpoints: must be a non-empty list/] },
  { name: "etcd endpoints missing", config: "backends: [{name: e, type: etcd}]\n", lines: [/^backends\[0\]\.etcd\.endpoints: missing/] },
  { name: "zookeeper.connect as a list", config: "backends: [{name: z, type: zookeeper, zookeeper: {connect: [a, b]}}]\n", lines: [/^backends\[0\]\.zookeeper\.connect: must be a host:port list/] },
  { name: "clusterName as a number", config: "clusterName: 12\n", lines: [/^clusterName: .* must be a DNS label/] },
  // unknown names and lookalikes
  { name: "type with a Cyrillic lookalike letter", config: "backends: [{name: r, type: rеdis}]\n", lines: [/^backends\[0\]\.type: "rеdis" is not a backend type/] },
  { name: "type in the wrong case", config: "backends: [{name: r, type: Redis}]\n", lines: [/^backends\[0\]\.type: "Redis" is not a backend type/] },
  { name: "name with a Cyrillic lookalike letter", config: "backends: [{name: rеdis, type: kubernetes}]\n", lines: [/^backends\[0\]\.name: .* must be a DNS label/] },
  { name: "name longer than a DNS label", config: `backends: [{name: ${"n".repeat(64)}, type: kubernetes}]\n`, lines: [/^backends\[0\]\.name: .* must be a DNS label/] },
  { name: "name with a path", config: "backends: [{name: ../redis, type: kubernetes}]\n", lines: [/^backends\[0\]\.name: .* must be a DNS label/] },
  { name: "defaultBackend naming no configured backend (lookalike)", config: "defaultBackend: kubernetеs\n", lines: [/^defaultBackend: "kubernetеs" is not a configured backend/] },
  {
    name: "a name used three times, across types",
    config: "backends: [{name: x, type: kubernetes}, {name: x, type: redis, redis: {url: 'redis://h:1'}}, {name: x, type: etcd, etcd: {endpoints: ['http://h:1']}}]\n",
    lines: [/^backends\[1\]\.name: "x" is used twice/, /^backends\[2\]\.name: "x" is used twice/],
  },
  { name: "__proto__ key", config: "__proto__: {defaultBackend: evil}\n", lines: [/^unknown field "__proto__"/] },
  // credentials inline
  { name: "http:// url with a password for redis", config: `backends: [{name: r, type: redis, redis: {url: 'http://user:${inline.redisHttp}@127.0.0.1:6379'}}]\n`, lines: [/^backends\[0\]\.redis\.url: must be a redis/], secret: inline.redisHttp },
  { name: "YAML syntax error on the line holding a password", config: `backends: [{name: r, type: redis, redis: {url: 'redis://:${inline.yamlSyntax}@127.0.0.1:6379'}\n`, lines: [/^not valid YAML/], secret: inline.yamlSyntax },
  { name: "password given as a mapping where the url belongs", config: `backends: [{name: r, type: redis, redis: {url: {password: ${inline.wrongType}}}}]\n`, lines: [/^backends\[0\]\.redis\.url: must be a redis/], secret: inline.wrongType },
  // huge configs
  {
    // Just under the loader's cap (MAX_CONFIG_BYTES, 1 MiB); a larger file is refused before it is parsed (below).
    name: "a 1 MB config with one mistake at the end",
    config: () => `${"# padding padding padding padding padding padding padding padding padding padding\n".repeat(12_900)}clusterName: East\n`,
    lines: [/^clusterName: "East" must be a DNS label/],
    withinMs: 20_000,
  },
  {
    name: "20,000 backends with the same name: one line per duplicate",
    config: () => `backends:\n${"  - {name: same, type: kubernetes}\n".repeat(20_000)}`,
    lines: Array.from({ length: 19_999 }, (_, i) => new RegExp(`^backends\\[${i + 1}\\]\\.name: "same" is used twice$`)),
    withinMs: 20_000,
  },
  {
    // [BUG D] config.ts echoes the whole value into the message: a 1 MB clusterName is a 1 MB line.
    name: "[BUG D] a 1 MB clusterName gives a bounded line",
    config: () => `clusterName: ${"x".repeat(1_000_000)}\n`,
    lines: [/^clusterName: .* must be a DNS label/],
  },
];

describe("config layer: one line per mistake, naming the field", () => {
  for (const c of configCases) {
    test(c.name, () => {
      const text = typeof c.config === "function" ? c.config() : c.config;
      const started = Date.now();
      const got = configProblems(text);
      const ms = Date.now() - started;
      if (c.withinMs) assert.ok(ms < c.withinMs, `took ${ms}ms (limit ${c.withinMs}ms)`);
      if (c.secret) assertNoLeak(got.join("\n"), c.secret, JSON.stringify(got));
      assertBoundedLines(got);
      assert.equal(got.length, c.lines.length, `one line per mistake: ${JSON.stringify(got.slice(0, 5))}`);
      c.lines.forEach((pattern, i) => assert.match(got[i], pattern));
    });
  }

  test("anchors and aliases used sparingly still work", () => {
    const config = parseConfig("backends:\n  - {name: a, type: redis, redis: &r {url: 'redis://h:6379', keyPrefix: k}}\n  - {name: b, type: redis, redis: *r}\n");
    assert.deepEqual(config.backends.map((b) => [b.name, b.settings.url]), [["a", "redis://h:6379"], ["b", "redis://h:6379"]]);
  });

  test("__proto__ in the config pollutes nothing", () => {
    assert.throws(() => parseConfig("__proto__: {defaultBackend: evil}\n"), ConfigError);
    assert.equal(({} as Record<string, unknown>).defaultBackend, undefined, "Object.prototype polluted");
  });

  test("[BUG E] a list or mapping where a string belongs is reported as the wrong type, not as a misleading value", () => {
    // String(["redis"]) is "redis" and String({}) is "[object Object]": today the lines read
    // `backends[0].type: "redis" is not a backend type (known: kubernetes, etcd, redis, zookeeper)`
    // and `defaultBackend: "[object Object]" is not a configured backend`.
    const got = configProblems("clusterName: [east]\ndefaultBackend: {name: kubernetes}\nbackends: [{name: a, type: [redis]}]\n");
    assert.equal(got.length, 3, JSON.stringify(got));
    for (const line of got) {
      assert.doesNotMatch(line, /\[object Object\]/, line);
      assert.doesNotMatch(line, /"(redis|east)"/, `the value is shown as if it were that string: ${line}`);
    }
  });
});

// ---------------------------------------------------------------------------------------------------
// The backend layer (each backend's settings parser, run at start-up).

const backendSecret = {
  redisPath: secret("RedisPathPw"),
  redisAt: secret("AtSignPw"),
  etcdUser: secret("EtcdUserPw"),
  etcdQuery: secret("EtcdQueryTok"),
  zkConnect: secret("ZkDigestPw"),
};

interface BackendCase {
  name: string;
  /** One `backends[]` entry in YAML flow style. */
  entry: string;
  lines: RegExp[];
  secret?: string;
}

const backendCases: BackendCase[] = [
  {
    name: "redis: negative timeout and an unknown setting",
    entry: "{name: r, type: redis, redis: {url: 'redis://127.0.0.1:6379', commandTimeoutMs: -1, bogus: 1}}",
    lines: [/unknown setting redis\.bogus/, /redis\.commandTimeoutMs must be a positive integer/],
  },
  { name: "redis: timeout written as a duration", entry: "{name: r, type: redis, redis: {url: 'redis://127.0.0.1:6379', connectTimeoutMs: 2s}}", lines: [/redis\.connectTimeoutMs must be a positive integer/] },
  { name: "redis: zero timeout", entry: "{name: r, type: redis, redis: {url: 'redis://127.0.0.1:6379', commandTimeoutMs: 0}}", lines: [/redis\.commandTimeoutMs must be a positive integer/] },
  { name: "redis: passwordFile that does not exist", entry: "{name: r, type: redis, redis: {url: 'redis://127.0.0.1:6379', passwordFile: /nonexistent/kubelock/pw}}", lines: [/redis\.passwordFile: cannot read/] },
  { name: "redis: keyPrefix with braces (hash-tag escape)", entry: "{name: r, type: redis, redis: {url: 'redis://127.0.0.1:6379', keyPrefix: 'x}{y'}}", lines: [/redis\.keyPrefix must be a non-empty string without spaces or braces/] },
  {
    name: "redis: tls on a redis:// url, and a non-boolean flag",
    entry: "{name: r, type: redis, redis: {url: 'redis://127.0.0.1:6379', tls: {insecureSkipVerify: yes-please}}}",
    lines: [/insecureSkipVerify must be true or false/, /redis\.tls needs a rediss:\/\/ url/],
  },
  { name: "redis: sentinels as a string", entry: "{name: r, type: redis, redis: {url: 'redis://127.0.0.1:6379', sentinels: 'a:1', sentinelName: m}}", lines: [/redis\.sentinels must be a non-empty list/] },
  { name: "zookeeper: NaN session timeout", entry: "{name: z, type: zookeeper, zookeeper: {connect: '127.0.0.1:2181', sessionTimeoutMs: .nan}}", lines: [/zookeeper\.sessionTimeoutMs must be an integer/] },
  { name: "zookeeper: rootPath escaping upwards", entry: "{name: z, type: zookeeper, zookeeper: {connect: '127.0.0.1:2181', rootPath: /kubelock/../zookeeper}}", lines: [/zookeeper\.rootPath must be an absolute path/] },
  { name: "zookeeper: port out of range", entry: "{name: z, type: zookeeper, zookeeper: {connect: '127.0.0.1:99999'}}", lines: [/zookeeper\.connect .* must be host:port/] },
  { name: "etcd: username without passwordFile", entry: "{name: e, type: etcd, etcd: {endpoints: ['http://127.0.0.1:2379'], username: root}}", lines: [/etcd\.passwordFile is required with etcd\.username/] },
  { name: "etcd: mixed schemes", entry: "{name: e, type: etcd, etcd: {endpoints: ['http://127.0.0.1:2379', 'https://127.0.0.1:2380']}}", lines: [/etcd\.endpoints mix http:\/\/ and https:\/\//] },
  { name: "etcd: prefix with a space", entry: "{name: e, type: etcd, etcd: {endpoints: ['http://127.0.0.1:2379'], prefix: '/kube lock'}}", lines: [/etcd\.prefix must be a non-empty key prefix/] },
  { name: "kubernetes: unknown setting", entry: "{name: k, type: kubernetes, kubernetes: {namespace: other}}", lines: [/unknown setting kubernetes\.namespace/] },
  { name: "kubernetes: negative timeout", entry: "{name: k, type: kubernetes, kubernetes: {requestTimeoutMs: -5}}", lines: [/kubernetes\.requestTimeoutMs must be a positive integer/] },
  // credentials inline
  { name: "redis url with a password and a bad database path", entry: `{name: r, type: redis, redis: {url: 'redis://:${backendSecret.redisPath}@127.0.0.1:6379/not-a-db'}}`, lines: [/redis\.url .*the path must be a database number/], secret: backendSecret.redisPath },
  {
    // [BUG B] redact() in src/backends/redis/settings.ts masks the password only up to its first '@'.
    name: "[BUG B] redis url whose password contains '@'",
    entry: `{name: r, type: redis, redis: {url: 'redis://:x@${backendSecret.redisAt}@127.0.0.1:6379/not-a-db'}}`,
    lines: [/redis\.url .*the path must be a database number/],
    secret: backendSecret.redisAt,
  },
  { name: "etcd endpoint with user:password", entry: `{name: e, type: etcd, etcd: {endpoints: ['http://root:${backendSecret.etcdUser}@127.0.0.1:2379']}}`, lines: [/etcd\.endpoints: URLs must not carry credentials/], secret: backendSecret.etcdUser },
  {
    // [BUG C] parseEtcdSettings echoes the raw endpoint when it has a path or a query.
    name: "[BUG C] etcd endpoint with a token in the query string",
    entry: `{name: e, type: etcd, etcd: {endpoints: ['http://127.0.0.1:2379/?token=${backendSecret.etcdQuery}']}}`,
    lines: [/etcd\.endpoints: .*must be scheme:\/\/host:port/],
    secret: backendSecret.etcdQuery,
  },
  {
    // [BUG F] parseZooKeeperSettings echoes the whole connect string.
    name: "[BUG F] zookeeper connect string with digest credentials",
    entry: `{name: z, type: zookeeper, zookeeper: {connect: 'kubelock:${backendSecret.zkConnect}@127.0.0.1:2181'}}`,
    lines: [/zookeeper\.connect .*must be host:port/],
    secret: backendSecret.zkConnect,
  },
];

describe("backend layer: one line per mistake, naming the setting", () => {
  for (const c of backendCases) {
    test(c.name, async () => {
      const got = await backendProblems(c.entry);
      if (c.secret) assertNoLeak(got.join("\n"), c.secret, JSON.stringify(got));
      assertBoundedLines(got);
      assert.equal(got.length, c.lines.length, `one line per mistake: ${JSON.stringify(got)}`);
      c.lines.forEach((pattern, i) => assert.match(got[i], pattern));
    });
  }
});

// ---------------------------------------------------------------------------------------------------
// The loader (loadConfig): only a regular file of at most MAX_CONFIG_BYTES is read, never more than that.

/** The loader's lines for `path`; fails the test if the config is accepted. */
async function loadProblems(path: string): Promise<string[]> {
  try {
    await loadConfig(path);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${err}`);
    return err.problems;
  }
  assert.fail(`${path} was accepted`);
}

describe("config loader: a regular file of at most 1 MiB", () => {
  const padded = (bytes: number) => {
    const file = join(dir, `padded-${bytes}.yaml`);
    const body = "clusterName: east\n";
    writeFileSync(file, body + "#".repeat(bytes - body.length - 1) + "\n");
    return file;
  };

  test("/dev/zero is refused at once, unread, in one line", async () => {
    assert.deepEqual(await loadProblems("/dev/zero"), ["a character device, not a regular file: the config must be a file"]);
  });

  test("a directory is refused in one line", async () => {
    assert.deepEqual(await loadProblems(dir), ["a directory, not a regular file: the config must be a file"]);
  });

  test("a FIFO nobody writes to is refused without waiting for a writer", async () => {
    const fifo = join(dir, "config.fifo");
    execFileSync("mkfifo", [fifo]);
    assert.deepEqual(await loadProblems(fifo), ["a FIFO, not a regular file: the config must be a file"]);
  });

  test("a 10 MB file is refused in one line, before it is parsed", async () => {
    const file = join(dir, "ten-megabytes.yaml");
    writeFileSync(file, `${"# padding padding padding padding padding padding padding padding padding padding\n".repeat(125_000)}clusterName: East\n`);
    const size = statSync(file).size;
    assert.deepEqual(await loadProblems(file), [`the file has ${size} bytes; a config may have at most ${MAX_CONFIG_BYTES} (1 MiB)`]);
  });

  test("exactly MAX_CONFIG_BYTES is read; one byte more is refused", async () => {
    assert.equal((await loadConfig(padded(MAX_CONFIG_BYTES))).clusterName, "east");
    assert.deepEqual(await loadProblems(padded(MAX_CONFIG_BYTES + 1)), [`the file has ${MAX_CONFIG_BYTES + 1} bytes; a config may have at most ${MAX_CONFIG_BYTES} (1 MiB)`]);
  });

  test("a missing file is one line", async () => {
    const lines = await loadProblems(join(dir, "missing.yaml"));
    assert.equal(lines.length, 1);
    assert.match(lines[0], /^cannot read the file: ENOENT/);
  });
});

// ---------------------------------------------------------------------------------------------------
// The real CLI: exit code, output, time. Two at a time: every run starts node and tsx.

const tagged = secret("TaggedPw");

describe("kubelock operator --config", { concurrency: 2 }, () => {
  test("many shape mistakes at once: exit 2, one line each, nothing else started", async () => {
    const r = await startWith([
      "clusterName: East_1",
      "defaultBackend: nowhere",
      "logLevel: debug",
      "backends:",
      "  - {name: ok, type: kubernetes}",
      "  - {name: Bad_Name, type: kubernetes}",
      "  - {name: c, type: consul}",
      "  - {name: r, type: redis}",
      "  - {name: e, type: etcd, etcd: {endpoints: []}}",
      "  - {name: z, type: zookeeper, zookeeper: {connect: zk}}",
      "  - {name: ok, type: kubernetes}",
      "  - 42",
      "",
    ].join("\n"));
    assert.equal(r.code, 2, describeRun(r));
    const lines = mistakeLines(r.output);
    const expected = [
      /^ {2}- unknown field "logLevel"/,
      /^ {2}- clusterName: "East_1" must be a DNS label/,
      /^ {2}- backends\[1\]\.name: "Bad_Name" must be a DNS label/,
      /^ {2}- backends\[2\]\.type: "consul" is not a backend type/,
      /^ {2}- backends\[3\]\.redis\.url: missing/,
      /^ {2}- backends\[4\]\.etcd\.endpoints: must be a non-empty list/,
      /^ {2}- backends\[5\]\.zookeeper\.connect: must be a host:port list/,
      /^ {2}- backends\[6\]\.name: "ok" is used twice/,
      /^ {2}- backends\[7\]: must be a mapping/,
      /^ {2}- defaultBackend: "nowhere" is not a configured backend/,
    ];
    assert.equal(lines.length, expected.length, describeRun(r));
    expected.forEach((pattern, i) => assert.match(lines[i], pattern, describeRun(r)));
    assert.doesNotMatch(r.output, /operator started|serving|caches synced/, describeRun(r));
  });

  test("--config /dev/zero: exit 2 at once with one line, nothing read", async () => {
    const r = await startWithFile("/dev/zero");
    assert.equal(r.code, 2, describeRun(r));
    assert.deepEqual(mistakeLines(r.output), ["  - a character device, not a regular file: the config must be a file"], describeRun(r));
  });

  test("a config over 1 MiB: exit 2 with one line", async () => {
    const r = await startWith(`clusterName: east\n${"#".repeat(2 * MAX_CONFIG_BYTES)}\n`);
    assert.equal(r.code, 2, describeRun(r));
    assert.deepEqual(mistakeLines(r.output), [`  - the file has ${2 * MAX_CONFIG_BYTES + 19} bytes; a config may have at most ${MAX_CONFIG_BYTES} (1 MiB)`], describeRun(r));
  });

  test("billion laughs: exit 2 within seconds, not expanded", async () => {
    const r = await startWith(billionLaughs);
    assert.equal(r.code, 2, describeRun(r));
    assert.match(r.output, /resource exhaustion/, describeRun(r));
    assert.equal(mistakeLines(r.output).length, 1, describeRun(r));
  });

  test("a password next to a mistake in a redis url is not echoed", async () => {
    const pw = secret("CliRedisPw");
    const r = await startWith(`backends: [{name: r, type: redis, redis: {url: 'redis://kubelock:${pw}@127.0.0.1:6379/db-one'}}]\n`);
    assert.notEqual(r.code, "running", describeRun(r));
    assert.notEqual(r.code, 0, describeRun(r));
    assert.match(r.output, /redis\.url/);
    assertNoLeak(r.output, pw, describeRun(r));
  });

  test("an etcd endpoint with credentials is refused without echoing them", async () => {
    const pw = secret("CliEtcdPw");
    const r = await startWith(`backends: [{name: e, type: etcd, etcd: {endpoints: ['http://root:${pw}@127.0.0.1:2379']}}]\n`);
    assert.notEqual(r.code, "running", describeRun(r));
    assert.notEqual(r.code, 0, describeRun(r));
    assert.match(r.output, /etcd\.endpoints/);
    assertNoLeak(r.output, pw, describeRun(r));
  });

  test("[BUG G] an unknown YAML tag on the value holding a password: no warning may print that source line", async () => {
    // The yaml package emits a YAMLWarning ("Unresolved tag: !vault at line 1, column ...") with an
    // excerpt of the source line, password included, and the config is accepted. (When a config mistake
    // makes the CLI exit at once, the warning is lost with the process; an otherwise valid config starts.)
    const r = await startWith(`backends: [{name: r, type: redis, redis: {url: !vault 'redis://:${tagged}@127.0.0.1:1'}}]\n`, {
      stopWhen: /informer list failed|caches synced/,
    });
    assertNoLeak(r.output, tagged, describeRun(r));
  });

  test("[BUG A] a mistake in a backend's settings exits 2, like any other config mistake", async () => {
    const r = await startWith("backends: [{name: r, type: redis, redis: {url: 'redis://127.0.0.1:6379', commandTimeoutMs: -1}}]\n");
    assert.notEqual(r.code, "running", describeRun(r));
    assert.match(r.output, /backend "r": redis\.commandTimeoutMs must be a positive integer/, describeRun(r));
    assert.equal(r.code, 2, `kubelock operator --help: "2 bad flags or config"; ${describeRun(r)}`);
  });

  test("[BUG H] the mistakes of every backend are reported at once, not only the first backend's", async () => {
    const r = await startWith([
      "backends:",
      "  - {name: r, type: redis, redis: {url: 'redis://127.0.0.1:6379', commandTimeoutMs: -1}}",
      "  - {name: e, type: etcd, etcd: {endpoints: ['http://127.0.0.1:2379'], dialTimeoutMs: 0}}",
      "  - {name: k, type: kubernetes, kubernetes: {bogus: true}}",
      "",
    ].join("\n"));
    assert.notEqual(r.code, "running", describeRun(r));
    const lines = mistakeLines(r.output);
    for (const pattern of [/redis\.commandTimeoutMs/, /etcd\.dialTimeoutMs/, /unknown setting kubernetes\.bogus/]) {
      assert.ok(lines.some((l) => pattern.test(l)), `no line matches ${pattern}: ${describeRun(r)}`);
    }
  });
});
