#!/usr/bin/env bash
# Installs what the end-to-end tier's real node needs, skipping what is there: Debian's containerd,
# runc and CNI plugins for the node; buildah, skopeo, umoci, mmdebstrap and dpkg-repack to build images
# without a registry; iptables, conntrack, socat for kube-proxy and the API relay; busybox-static for a
# small busybox image. Only `make e2e` runs it.
set -euo pipefail

need=(containerd runc containernetworking-plugins buildah skopeo umoci mmdebstrap dpkg-repack
  iptables conntrack socat busybox-static gcc libc6-dev)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "node deps: installing Debian packages: ${missing[*]}"
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd=sudo
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts containerd as a system service on install; the node runs its own, with its own paths.
if command -v systemctl >/dev/null && systemctl is-active --quiet containerd 2>/dev/null; then
  systemctl stop containerd && systemctl disable --quiet containerd || true
fi
