#!/usr/bin/env bash
# Builds promtool from its Go module (github.com/prometheus/prometheus/cmd/promtool), once, into a cache
# outside the repository, and prints the binary's path. The monitoring tests
# (test/integration/monitoring.test.ts) call it to check and unit-test deploy/monitoring's rules.
#
#   PROMTOOL            a ready promtool binary: printed as is, nothing is built.
#   KUBELOCK_CACHE      cache root (default: $XDG_CACHE_HOME/kubelock or ~/.cache/kubelock).
#
# Progress goes to stderr; the path alone goes to stdout.
set -euo pipefail

# Prometheus's Go module versions are v0.MINOR.PATCH for release v3.MINOR.PATCH.
PROMETHEUS_MODULE_VERSION=v0.316.0

if [ -n "${PROMTOOL:-}" ]; then
  [ -x "$PROMTOOL" ] || { echo "PROMTOOL=$PROMTOOL is not an executable" >&2; exit 1; }
  echo "$PROMTOOL"
  exit 0
fi

cache=${KUBELOCK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubelock}
out="$cache/tools/promtool-$PROMETHEUS_MODULE_VERSION"
bin="$out/promtool"
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$out"

minor_patch=${PROMETHEUS_MODULE_VERSION#v0.3}
release="3.$((10#${minor_patch%%.*})).${minor_patch#*.}"
export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0
echo "promtool: building promtool $release from github.com/prometheus/prometheus/cmd/promtool (a cold build takes a few minutes) ..." >&2
start=$SECONDS
# `go install module@version` builds with the module's own go.mod and go.sum (checked against the checksum
# database), in a scratch GOBIN so a half-built binary never lands at the cached path.
scratch=$(mktemp -d "$out/build.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
GOBIN="$scratch" GOFLAGS="-trimpath" go install \
  -ldflags "-s -w -X github.com/prometheus/common/version.Version=$release" \
  "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_MODULE_VERSION"
mv "$scratch/promtool" "$bin"
echo "promtool: built promtool $release in $((SECONDS - start))s" >&2
echo "$bin"
