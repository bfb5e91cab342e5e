#!/usr/bin/env bash
# Builds the local control plane's binaries (kube-apiserver, kube-controller-manager, kubectl, etcd)
# from Go modules, once, into a cache outside the repository, and prints the directory that holds them.
# With --node it also builds what a real node runs (kubelet, kube-scheduler, kube-proxy), from the same
# k8s.io/kubernetes module: the end-to-end tier uses them.
#
#   KUBEBUILDER_ASSETS  a directory with ready binaries: printed as is, nothing is built.
#   KUBELOCK_CACHE      cache root (default: $XDG_CACHE_HOME/kubelock or ~/.cache/kubelock).
#
# Progress goes to stderr; the directory alone goes to stdout.
set -euo pipefail

KUBERNETES_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
node=false
case "${1:-}" in
  --node) node=true ;;
  "") ;;
  *) echo "usage: $0 [--node]" >&2; exit 2 ;;
esac

if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
  wanted=(kube-apiserver etcd); $node && wanted+=(kubelet kube-scheduler kube-proxy)
  for b in "${wanted[@]}"; do
    [ -x "$KUBEBUILDER_ASSETS/$b" ] || { echo "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS has no executable $b" >&2; exit 1; }
  done
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

cache=${KUBELOCK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubelock}
out="$cache/controlplane/kubernetes-$KUBERNETES_VERSION-etcd-$ETCD_VERSION"
mkdir -p "$out"

export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=mod

minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
version_flags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  version_flags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
done

build() { # build MODULE_DIR BINARY PACKAGE [extra ldflags]
  local dir=$1 bin=$2 pkg=$3 ldflags=${4:-}
  if [ -x "$out/$bin" ]; then return; fi
  echo "controlplane: building $bin from $pkg (a cold build takes several minutes) ..." >&2
  local start=$SECONDS
  (cd "$here/$dir" && go build -trimpath -tags selinux,notest -ldflags "-s -w $ldflags" -o "$out/$bin.tmp" "$pkg")
  mv "$out/$bin.tmp" "$out/$bin"
  echo "controlplane: built $bin in $((SECONDS - start))s" >&2
}

build etcd etcd go.etcd.io/etcd/server/v3
build kubernetes kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$version_flags"
build kubernetes kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$version_flags"
build kubernetes kubectl k8s.io/kubernetes/cmd/kubectl "$version_flags"
if $node; then
  build kubernetes kubelet k8s.io/kubernetes/cmd/kubelet "$version_flags"
  build kubernetes kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler "$version_flags"
  build kubernetes kube-proxy k8s.io/kubernetes/cmd/kube-proxy "$version_flags"
fi

echo "$out"
