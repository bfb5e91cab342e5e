/** Operator config: defaults, and one clear line per mistake. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { KubeConfig } from "@kubernetes/client-node";
import { BackendConfigError } from "../../src/backends/backend";
import { BackendRegistry, backendSettingsProblems } from "../../src/backends/registry";
import { ConfigError, parseConfig, parseConfigAndSettings } from "../../src/config";
import { configProblems } from "../support/config";

const problems = configProblems;

describe("config", () => {
  test("an empty file means the built-in kubernetes backend", () => {
    assert.deepEqual(parseConfig(""), { defaultBackend: "kubernetes", clusterName: "", backends: [] });
  });

  test("the README's configuration example parses", () => {
    const config = parseConfig(`
defaultBackend: kubernetes
clusterName: east
kubernetes: { requestTimeoutMs: 10000 }
backends:
  - name: redis
    type: redis
    redis: { url: redis://redis:6379, keyPrefix: kubelock }
  - name: etcd
    type: etcd
    etcd: { endpoints: [http://etcd:2379] }
  - name: zk
    type: zookeeper
    zookeeper: { connect: "zk-0:2181,zk-1:2181", sessionTimeoutMs: 30000 }
`);
    assert.equal(config.clusterName, "east");
    assert.deepEqual(config.backends.map((b) => [b.name, b.type]), [["redis", "redis"], ["etcd", "etcd"], ["zk", "zookeeper"]]);
    assert.deepEqual(config.backends[0].settings, { url: "redis://redis:6379", keyPrefix: "kubelock" });
    assert.deepEqual(config.kubernetes, { requestTimeoutMs: 10000 });
  });

  const bad: [string, string, RegExp[]][] = [
    ["broken YAML", "backends: [", [/not valid YAML/]],
    ["a list at the top", "- a", [/top level must be a mapping/]],
    ["unknown field", "defualtBackend: x", [/unknown field "defualtBackend"/]],
    ["unknown type", "backends: [{name: a, type: consul}]", [/backends\[0\]\.type: "consul" is not a backend type/]],
    ["duplicate names", "backends: [{name: a, type: kubernetes}, {name: a, type: kubernetes}]", [/"a" is used twice/]],
    ["unknown defaultBackend", "defaultBackend: nope", [/defaultBackend: "nope" is not a configured backend/]],
    ["redis without url", "backends: [{name: r, type: redis, redis: {}}]", [/redis\.url: missing/]],
    ["etcd with empty endpoints", "backends: [{name: e, type: etcd, etcd: {endpoints: []}}]", [/etcd\.endpoints: must be a non-empty list/]],
    ["zookeeper with a bad connect string", "backends: [{name: z, type: zookeeper, zookeeper: {connect: 'zk'}}]", [/zookeeper\.connect: must be a host:port list/]],
    ["settings under the wrong key", "backends: [{name: r, type: redis, etcd: {}}]", [/backends\[0\]\.etcd: unexpected field/, /redis\.url: missing/]],
    ["bad names, all reported", "clusterName: East_1\nbackends: [{name: Bad_Name, type: kubernetes}]", [/clusterName/, /backends\[0\]\.name/]],
    ["an entry named after the built-in backend", "backends: [{name: kubernetes, type: kubernetes, kubernetes: {requestTimeoutMs: 5000}}]",
      [/^backends\[0\]\.name: "kubernetes" is the built-in Kubernetes Lease backend's name; set its settings in the top-level "kubernetes:" block, or name this entry otherwise$/]],
    ["another type under the built-in's name", "backends: [{name: kubernetes, type: redis, redis: {url: 'redis://r:6379'}}]", [/^backends\[0\]\.name: "kubernetes" is the built-in/]],
    ["the built-in's block not a mapping", "kubernetes: [requestTimeoutMs]", [/^kubernetes: a list, not a mapping; it holds the settings of the built-in kubernetes backend$/]],
  ];
  for (const [name, text, expected] of bad) {
    test(`rejects ${name}`, () => {
      const got = problems(text);
      assert.equal(got.length, expected.length, `one line per mistake: ${JSON.stringify(got)}`);
      expected.forEach((pattern, i) => assert.match(got[i], pattern));
    });
  }

  test("the top-level kubernetes block configures the built-in backend, checked by its type's parser", async () => {
    const config = await parseConfigAndSettings("defaultBackend: kubernetes\nkubernetes: {requestTimeoutMs: 5000}\nbackends: []\n");
    assert.deepEqual(config, { defaultBackend: "kubernetes", clusterName: "", backends: [], kubernetes: { requestTimeoutMs: 5000 } });
    await assert.rejects(parseConfigAndSettings("kubernetes: {requestTimeoutMs: -1, namespace: x}\n"), (err: Error) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.problems.length, 2, err.message);
      assert.ok(err.problems.every((p) => p.startsWith('backend "kubernetes": ')), err.message);
      return true;
    });
  });

  test("a secret in a URL is never echoed", () => {
    const got = problems("backends: [{name: r, type: redis, redis: {url: 'http://user:hunter2@redis'}}]");
    assert.ok(!got.join("\n").includes("hunter2"));
  });
});

describe("credentials in the config, as the README's Configuration states the rule", () => {
  const pw = "Inline-s3cret-Pw";
  test("redis.url may carry a password", async () => {
    assert.deepEqual(await backendSettingsProblems({ name: "r", type: "redis", settings: { url: `redis://kubelock:${pw}@redis:6379` } }), []);
  });
  const refused: [string, string, Record<string, unknown>, RegExp][] = [
    ["etcd.endpoints", "etcd", { endpoints: [`http://root:${pw}@etcd:2379`] }, /etcd\.endpoints: URLs must not carry credentials/],
    ["a password in postgresql.url", "postgresql", { url: `postgres://kubelock:${pw}@pg:5432/locks` }, /postgresql\.url must not carry a password/],
    ["zookeeper.connect", "zookeeper", { connect: `kubelock:${pw}@zk:2181` }, /zookeeper\.connect .*credentials go in zookeeper\.authFile/],
  ];
  for (const [where, type, settings, message] of refused) {
    test(`credentials in ${where} are refused, unechoed`, async () => {
      const lines = await backendSettingsProblems({ name: "b", type, settings });
      assert.equal(lines.length, 1, JSON.stringify(lines));
      assert.match(lines[0], message);
      assert.ok(!lines[0].includes(pw), lines[0]);
    });
  }
  test("a user name without a password in postgresql.url is fine", async () => {
    assert.deepEqual(await backendSettingsProblems({ name: "p", type: "postgresql", settings: { url: "postgres://kubelock@pg:5432/locks" } }), []);
  });
});

describe("the backend registry and the built-in kubernetes backend", () => {
  // Nothing connects: Lease backends are built without a request.
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromOptions({
    clusters: [{ name: "c", server: "https://127.0.0.1:1" }], users: [{ name: "u", token: "t" }],
    contexts: [{ name: "x", cluster: "c", user: "u" }], currentContext: "x",
  });

  test("refuses an entry that takes the built-in's name, building nothing", async () => {
    await assert.rejects(BackendRegistry.fromConfig([{ name: "kubernetes", type: "kubernetes", settings: {} }], { kubeConfig }), (err: Error) => {
      assert.ok(err instanceof BackendConfigError);
      assert.match(err.message, /^backend "kubernetes": the built-in Kubernetes Lease backend's name; set its settings in the config's top-level "kubernetes:" block/);
      return true;
    });
  });

  test("builds the built-in with the top-level block's settings", async () => {
    const registry = await BackendRegistry.fromConfig([{ name: "leases", type: "kubernetes" }], { kubeConfig, builtinSettings: { requestTimeoutMs: 5000 } });
    assert.deepEqual(registry.names(), ["kubernetes", "leases"]);
    await registry.closeAll();
    // The block reaches the built-in's factory: a bad value there fails the build.
    await assert.rejects(BackendRegistry.fromConfig([], { kubeConfig, builtinSettings: { requestTimeoutMs: -1 } }), /kubernetes\.requestTimeoutMs/);
  });
});
