/**
 * deploy/monitoring: the alert rules pass `promtool check rules` and their unit tests (`promtool test rules`, with
 * promtool built by hack/tools/promtool.sh), rules.yaml is exactly the PrometheusRule's spec, every metric named by
 * the rules and the Grafana dashboard is one the operator exports, and a claim shown Lost counts in
 * kubelock_claims_lost_total (the series behind the KubelockGrantsLost alert) once.
 *
 * rules.yaml is generated: after editing prometheusrule.yaml, run this file with KUBELOCK_UPDATE_RULES=1 to rewrite it.
 */
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { after, before, test } from "node:test";
import * as k8s from "@kubernetes/client-node";
import { parse, stringify } from "yaml";
import { OperatorMetrics } from "../../src/metrics";
import { createNamespace, eventually, kubeConfig, run } from "../support/env";
import { Api, findLog, startOperator, type OperatorProcess } from "../support/operator";
import { tempDir } from "../support/temp";

const repoRoot = resolve(__dirname, "..", "..");
const monitoring = join(repoRoot, "deploy/monitoring");
const read = (file: string) => readFileSync(join(monitoring, file), "utf8");

const RULES_HEADER = `# Generated from prometheusrule.yaml (its spec): edit that file, not this one. To regenerate:
#   KUBELOCK_UPDATE_RULES=1 npx tsx test/run.ts test/integration/monitoring.test.ts
# (test/integration/monitoring.test.ts fails while this file differs from that spec.)
`;

interface Rule { alert?: string; record?: string; expr: string; for?: string; labels?: Record<string, string>; annotations?: Record<string, string> }
interface RuleGroup { name: string; rules: Rule[] }

const prometheusRule = parse(read("prometheusrule.yaml")) as { apiVersion: string; kind: string; spec: { groups: RuleGroup[] } };
const groups = prometheusRule.spec.groups;
const alerts = groups.flatMap((g) => g.rules).filter((r) => r.alert);
const renderedRules = RULES_HEADER + stringify(prometheusRule.spec, { lineWidth: 0 });

let promtool: string;
before(async () => {
  const built = await run("bash", [join(repoRoot, "hack/tools/promtool.sh")]);
  assert.equal(built.code, 0, `hack/tools/promtool.sh failed:\n${built.stderr}`);
  promtool = built.stdout.trim();
  if (process.env.KUBELOCK_UPDATE_RULES === "1") writeFileSync(join(monitoring, "rules.yaml"), renderedRules);
});

const PROMQL_WORDS = new Set(["and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "inf", "nan"]);

/**
 * The metric names a PromQL expression selects: what is left once strings, label matchers, ranges, Grafana
 * variables and label lists are removed, minus function names (followed by "(") and PromQL's own words.
 */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, " ")
    .replace(/\{[^}]*\}/g, " ")
    .replace(/\[[^\]]*\]/g, " ")
    .replace(/\$\{?\w+\}?/g, " ")
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ");
  const names = new Set<string>();
  for (const match of bare.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const [word] = match;
    const before = bare.slice(0, match.index);
    const after = bare.slice(match.index + word.length);
    if (/[0-9.]$/.test(before) || /^\s*\(/.test(after) || PROMQL_WORDS.has(word.toLowerCase())) continue;
    names.add(word);
  }
  return [...names].sort();
}

/** Every series name the operator's registry exposes (a histogram as its _bucket, _sum and _count). */
async function exportedNames(): Promise<Set<string>> {
  const metrics = await new OperatorMetrics({ perLock: true }).registry.getMetricsAsJSON();
  return new Set(metrics.flatMap((m) => (String(m.type) === "histogram" ? ["_bucket", "_sum", "_count"].map((s) => m.name + s) : [m.name])));
}

/** Series names from a scrape's `# TYPE` lines, expanded as exportedNames does. */
function scrapedNames(text: string): Set<string> {
  const names = new Set<string>();
  for (const [, name, type] of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    for (const n of type === "histogram" ? ["_bucket", "_sum", "_count"].map((s) => name + s) : type === "summary" ? [name, `${name}_sum`, `${name}_count`] : [name]) names.add(n);
  }
  return names;
}

interface Panel { id: number; type: string; title: string; datasource?: { type?: string; uid?: string }; gridPos: { x: number; y: number; w: number; h: number }; targets?: { expr: string; datasource?: { uid?: string } }[] }
const dashboard = JSON.parse(read("dashboard.json")) as {
  schemaVersion: number; uid: string; panels: Panel[];
  templating: { list: { name: string; type: string; query: string | { query: string }; datasource?: { uid?: string } }[] };
};
const dashboardExprs = (): { where: string; expr: string }[] => [
  ...dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ where: `panel "${p.title}"`, expr: t.expr }))),
  ...dashboard.templating.list.filter((v) => v.type === "query").map((v) => {
    const query = typeof v.query === "string" ? v.query : v.query.query;
    // label_values(METRIC, label) names a metric the way a selector does.
    return { where: `variable $${v.name}`, expr: query.replace(/^label_values\((.*),\s*\w+\)$/, "$1") };
  }),
];
const ruleExprs = () => alerts.map((r) => ({ where: `alert ${r.alert}`, expr: r.expr }));

test("metricNames finds the selected names, and the check flags a name the operator does not export", async () => {
  assert.deepEqual(
    metricNames('sum by (job, le) (rate(kubelock_x_bucket{job="$job", le=~"1|2"}[$__rate_interval])) / on (job) group_left(version) up offset 5m > 1e3 unless kubelock_y'),
    ["kubelock_x_bucket", "kubelock_y", "up"],
  );
  assert.deepEqual(metricNames("histogram_quantile(0.99, sum(rate(kubelock_handoff_seconds_bucket[5m])) without (instance))"), ["kubelock_handoff_seconds_bucket"]);
  const exported = await exportedNames();
  assert.ok(exported.has("kubelock_handoff_seconds_bucket") && exported.has("kubelock_claims_lost_total") && exported.has("kubelock_leader"));
  assert.deepEqual(metricNames("rate(kubelock_grant_total[5m]) + up").filter((n) => !exported.has(n)), ["kubelock_grant_total", "up"]);
});

test("the PrometheusRule has each asked-for alert with for, severity, summary and description; rules.yaml is its spec", () => {
  assert.equal(prometheusRule.apiVersion, "monitoring.coreos.com/v1");
  assert.equal(prometheusRule.kind, "PrometheusRule");
  for (const alert of ["KubelockClaimsStuck", "KubelockClaimsPendingTooLong", "KubelockBackendUnavailable", "KubelockGrantsLost",
    "KubelockRenewalFailures", "KubelockLeaderFlapping", "KubelockNoLeader", "KubelockMultipleLeaders"]) {
    assert.ok(alerts.some((r) => r.alert === alert), `alert ${alert}`);
  }
  for (const rule of alerts) {
    assert.match(rule.for ?? "", /^\d+[smh]$/, `${rule.alert} has a for:`);
    assert.ok(["critical", "warning"].includes(rule.labels?.severity ?? ""), `${rule.alert} has a severity label`);
    assert.ok((rule.annotations?.summary?.length ?? 0) > 10 && (rule.annotations?.description?.length ?? 0) > 80, `${rule.alert} has a summary and a description`);
  }
  assert.equal(read("rules.yaml"), renderedRules,
    "deploy/monitoring/rules.yaml differs from prometheusrule.yaml's spec: regenerate it with KUBELOCK_UPDATE_RULES=1 (see its header)");
});

test("promtool check rules: every group and rule is valid, lint included", async () => {
  const result = await run(promtool, ["check", "rules", "--lint=all", "--lint-fatal", join(monitoring, "rules.yaml")]);
  assert.equal(result.code, 0, `promtool check rules failed:\n${result.stdout}${result.stderr}`);
  const rules = groups.reduce((n, g) => n + g.rules.length, 0);
  assert.match(result.stdout, new RegExp(`^\\s*SUCCESS: ${rules} rules found$`, "m"), result.stdout);
});

test("promtool test rules: every test group passes, and every alert is tested firing beside healthy series", async () => {
  const testFile = join(monitoring, "rules.test.yaml");
  const junit = join(tempDir("kubelock-promtool-"), "junit.xml");
  const result = await run(promtool, ["test", "rules", `--junit=${junit}`, testFile]);
  assert.equal(result.code, 0, `promtool test rules failed:\n${result.stdout}${result.stderr}`);
  assert.match(result.stdout, /^\s*SUCCESS$/m, result.stdout);

  const unitTests = parse(readFileSync(testFile, "utf8")) as {
    rule_files: string[];
    tests: { name: string; input_series: { series: string }[]; alert_rule_test: { alertname: string; exp_alerts: { exp_labels: Record<string, string> }[] }[] }[];
  };
  assert.deepEqual(unitTests.rule_files, ["rules.yaml"]);
  const report = readFileSync(junit, "utf8");
  assert.doesNotMatch(report, /<failure|<error/, report);
  const reported = [...report.matchAll(/<testcase name="([^"]*)"/g)].map((m) => m[1].replace(/&#39;/g, "'").replace(/&#34;/g, '"'));
  assert.deepEqual(reported, unitTests.tests.map((t) => t.name), "promtool reports each test group");

  const labelsOf = (series: string) => Object.fromEntries([...series.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
  for (const rule of alerts) {
    const firing = unitTests.tests.filter((t) => t.alert_rule_test.some((a) => a.alertname === rule.alert && a.exp_alerts.length > 0));
    assert.ok(firing.length > 0, `${rule.alert} is tested firing`);
    for (const group of firing) {
      // A healthy series: one that no alert expected in this group was raised for (its labels match none).
      const expected = group.alert_rule_test.flatMap((a) => a.exp_alerts.map((e) => e.exp_labels));
      const healthy = group.input_series.filter(({ series }) => {
        const labels = labelsOf(series);
        return !expected.some((exp) => Object.entries(exp).every(([k, v]) => k === "severity" || labels[k] === v));
      });
      assert.ok(healthy.length > 0, `test group "${group.name}" has healthy series on which ${rule.alert} does not fire`);
    }
  }
});

test("the dashboard: schemaVersion ≥ 36, a datasource variable used by every panel, and only metric names the operator exports", async () => {
  assert.ok(dashboard.schemaVersion >= 36, `schemaVersion ${dashboard.schemaVersion}`);
  const datasource = dashboard.templating.list.find((v) => v.type === "datasource");
  assert.equal(datasource?.query, "prometheus");
  const ref = `\${${datasource.name}}`;
  const panels = dashboard.panels.filter((p) => p.type !== "row");
  for (const panel of panels) {
    assert.equal(panel.datasource?.uid, ref, `panel "${panel.title}" uses the datasource variable`);
    assert.ok((panel.targets ?? []).length > 0, `panel "${panel.title}" has a query`);
    for (const target of panel.targets ?? []) assert.equal(target.datasource?.uid ?? ref, ref, `panel "${panel.title}": a target's datasource`);
  }
  for (const v of dashboard.templating.list.filter((x) => x.type === "query")) assert.equal(v.datasource?.uid, ref, `variable $${v.name}'s datasource`);
  assert.equal(new Set(dashboard.panels.map((p) => p.id)).size, dashboard.panels.length, "panel ids are unique");
  for (const [i, a] of dashboard.panels.entries()) {
    for (const b of dashboard.panels.slice(i + 1)) {
      const overlap = a.gridPos.x < b.gridPos.x + b.gridPos.w && b.gridPos.x < a.gridPos.x + a.gridPos.w
        && a.gridPos.y < b.gridPos.y + b.gridPos.h && b.gridPos.y < a.gridPos.y + a.gridPos.h;
      assert.ok(!overlap, `panels "${a.title}" and "${b.title}" overlap`);
    }
  }

  const exported = await exportedNames();
  const unknown = [...dashboardExprs(), ...ruleExprs()].flatMap(({ where, expr }) => metricNames(expr).filter((n) => !exported.has(n)).map((n) => `${where}: ${n}`));
  assert.deepEqual(unknown, [], "names the operator does not export");
  const used = new Set(dashboardExprs().flatMap(({ expr }) => metricNames(expr)));
  for (const name of ["kubelock_grants_total", "kubelock_waiting", "kubelock_handoff_seconds_bucket", "kubelock_backend_errors_total", "kubelock_holders", "kubelock_leader"]) {
    assert.ok(used.has(name), `a panel shows ${name}`);
  }
});

const operators: OperatorProcess[] = [];
after(async () => {
  await Promise.all(operators.map((op) => op.stop()));
});

/** The value of the unlabelled series `name` in a scrape. */
const sample = (text: string, name: string) => text.split("\n").find((l) => l.startsWith(`${name} `))?.split(" ")[1];

test("a claim whose hold vanishes is shown Lost and counted once in kubelock_claims_lost_total; a scrape serves every name the assets use", async () => {
  const namespace = await createNamespace("monitoring");
  const api = new Api(namespace);
  const op = await startOperator({ namespace });
  operators.push(op);
  const metricsUrl = `http://${findLog(op, "serving metrics")?.address as string}/metrics`;
  const scrape = async () => (await fetch(metricsUrl)).text();
  const first = await scrape();
  assert.equal(sample(first, "kubelock_claims_lost_total"), "0");
  const served = scrapedNames(first);
  const missing = [...dashboardExprs(), ...ruleExprs()].flatMap(({ where, expr }) => metricNames(expr).filter((n) => !served.has(n)).map((n) => `${where}: ${n}`));
  assert.deepEqual(missing, [], "names a scrape of the operator does not serve");

  await api.createLock("guarded", { leaseDurationSeconds: 3 });
  await api.createClaim("holder", { lockName: "guarded" });
  const granted = await api.waitForPhase("holder", "Granted");
  // The hold is a slot Lease of the kubernetes backend, held by the claim's UID: deleting it is a hold vanishing.
  const leases = kubeConfig().makeApiClient(k8s.CoordinationV1Api);
  const slot = (await leases.listNamespacedLease({ namespace })).items.find((l) => l.spec?.holderIdentity === granted.metadata.uid);
  assert.ok(slot?.metadata?.name, "the claim's slot Lease");
  await leases.deleteNamespacedLease({ name: slot.metadata.name, namespace });
  await api.waitForPhase("holder", "Lost");
  await eventually("kubelock_claims_lost_total counts it", async () => (sample(await scrape(), "kubelock_claims_lost_total") === "1" ? true : undefined));

  // Later reconciles of the lock (a new claim granted) do not count the Lost claim again.
  await api.createClaim("next", { lockName: "guarded" });
  await api.waitForPhase("next", "Granted", 30_000);
  assert.equal(sample(await scrape(), "kubelock_claims_lost_total"), "1");
});
