# kubelock — `make demo` shows it working, `make test` runs every check. Both set themselves up.
SHELL := /bin/bash
NPX := npx --no-install

.PHONY: all deps controlplane build lint typecheck test test-unit test-chaos e2e demo run clean

all: build

deps: ## npm and Debian packages
	@hack/deps.sh

controlplane: ## build (once) and print the directory of kube-apiserver, etcd, kube-controller-manager, kubectl
	@hack/controlplane/build.sh

build: deps
	@echo "build: compiling TypeScript into dist/, then bundling the CLI into dist/kubelock.js"
	@$(NPX) tsc -p tsconfig.build.json
	@node hack/bundle.mjs

lint: deps
	@echo "lint: eslint"
	@$(NPX) eslint .

typecheck: deps
	@echo "typecheck: tsc --noEmit"
	@$(NPX) tsc --noEmit -p tsconfig.json

test: deps lint typecheck build ## set-up, lint, typecheck, then every test against a real control plane
	@echo "test: building the control plane if needed, starting it with Redis, ZooKeeper and etcd, running all tests"
	@$(NPX) tsx test/run.ts

e2e: deps build ## end-to-end tier on a real node (containerd, kubelet, scheduler, proxy): deploy/, examples/, init containers, gates
	@hack/node/deps.sh
	@echo "e2e: building the node's binaries and images if needed, starting a control plane and a real node in a network namespace"
	@$(NPX) tsx test/run.ts --node

test-unit: deps
	@$(NPX) tsx test/run.ts $(wildcard test/unit/*.test.ts)

test-chaos: deps build ## long fault-injection run: CHAOS_GRANTS grants (default 10000), CHAOS_SECONDS cap; report on stdout
	@$(NPX) tsx test/chaos/main.ts

demo: deps build ## a local control plane, Redis, the operator and a few holders taking turns
	@$(NPX) tsx hack/demo.ts

run: build ## the operator against the current kubeconfig
	node dist/kubelock.js operator $(if $(CONFIG),--config $(CONFIG),)

clean:
	rm -rf dist

.PHONY: bench
bench: deps build ## benchmarks against a local control plane, Redis, ZooKeeper and etcd; writes bench/RESULTS.md
	@$(NPX) tsx bench/run.ts

.PHONY: bench-scale
bench-scale: deps build ## the 100,000-lock scale run alone (about 40 min; leases of 300 s keep renewals at 1,000/s); writes bench/RESULTS-100k.md
	@BENCH_ONLY=4 BENCH_SCALE_N=100000 BENCH_SCALE_LEASE_SECONDS=300 BENCH_SCALE_TIMEOUT_MS=3600000 BENCH_RESULTS=RESULTS-100k.md $(NPX) tsx bench/run.ts
