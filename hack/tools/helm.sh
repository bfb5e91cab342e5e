#!/usr/bin/env bash
# Builds helm from its Go module (helm.sh/helm/v3/cmd/helm), once, into a cache outside the repository,
# and prints the binary's path. The chart's tests (test/integration/helm.test.ts) call it.
#
#   HELM                a ready helm binary: printed as is, nothing is built.
#   KUBELOCK_CACHE      cache root (default: $XDG_CACHE_HOME/kubelock or ~/.cache/kubelock).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/go-tool.sh"

HELM_VERSION=v3.22.0
go_tool helm HELM "$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
