#!/usr/bin/env bash
# Builds promtool from its Go module (github.com/prometheus/prometheus/cmd/promtool), once, into a cache
# outside the repository, and prints the binary's path. The monitoring tests
# (test/integration/monitoring.test.ts) call it to check and unit-test deploy/monitoring's rules.
#
#   PROMTOOL            a ready promtool binary: printed as is, nothing is built.
#   KUBELOCK_CACHE      cache root (default: $XDG_CACHE_HOME/kubelock or ~/.cache/kubelock).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/go-tool.sh"

# Prometheus's Go module versions are v0.MINOR.PATCH for release v3.MINOR.PATCH.
PROMETHEUS_MODULE_VERSION=v0.316.0
minor_patch=${PROMETHEUS_MODULE_VERSION#v0.3}
release="3.$((10#${minor_patch%%.*})).${minor_patch#*.}"
go_tool promtool PROMTOOL "$PROMETHEUS_MODULE_VERSION" "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_MODULE_VERSION" \
  "-X github.com/prometheus/common/version.Version=$release"
