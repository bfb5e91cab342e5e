/** Operator config: defaults, and one clear line per mistake. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { parseConfig } from "../../src/config";
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
  ];
  for (const [name, text, expected] of bad) {
    test(`rejects ${name}`, () => {
      const got = problems(text);
      assert.equal(got.length, expected.length, `one line per mistake: ${JSON.stringify(got)}`);
      expected.forEach((pattern, i) => assert.match(got[i], pattern));
    });
  }

  test("a secret in a URL is never echoed", () => {
    const got = problems("backends: [{name: r, type: redis, redis: {url: 'http://user:hunter2@redis'}}]");
    assert.ok(!got.join("\n").includes("hunter2"));
  });
});
