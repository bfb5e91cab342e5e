#!/usr/bin/env bash
# Builds helm from its Go module (helm.sh/helm/v3/cmd/helm), once, into a cache outside the repository,
# and prints the binary's path. The chart's tests (test/integration/helm.test.ts) call it.
#
#   HELM                a ready helm binary: printed as is, nothing is built.
#   KUBELOCK_CACHE      cache root (default: $XDG_CACHE_HOME/kubelock or ~/.cache/kubelock).
#
# Progress goes to stderr; the path alone goes to stdout.
set -euo pipefail

HELM_VERSION=v3.22.0

if [ -n "${HELM:-}" ]; then
  [ -x "$HELM" ] || { echo "HELM=$HELM is not an executable" >&2; exit 1; }
  echo "$HELM"
  exit 0
fi

cache=${KUBELOCK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubelock}
out="$cache/tools/helm-$HELM_VERSION"
bin="$out/helm"
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$out"

export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0
echo "helm: building helm $HELM_VERSION from helm.sh/helm/v3/cmd/helm (a cold build takes a few minutes) ..." >&2
start=$SECONDS
# `go install module@version` builds with the module's own go.mod and go.sum (checked against the checksum
# database), in a scratch GOBIN so a half-built binary never lands at the cached path.
scratch=$(mktemp -d "$out/build.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
GOBIN="$scratch" GOFLAGS="-trimpath" go install \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
mv "$scratch/helm" "$bin"
echo "helm: built helm $HELM_VERSION in $((SECONDS - start))s" >&2
echo "$bin"
