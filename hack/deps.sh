#!/usr/bin/env bash
# Installs what building and testing kubelock needs on a fresh Debian machine, skipping what is there:
# Debian packages (redis-server, zookeeper, postgresql, openssl, faketime for skewed clocks) and the npm
# packages (with the native ZooKeeper client).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
[ -f /usr/share/java/zookeeper.jar ] || missing+=(zookeeper)
command -v openssl >/dev/null || missing+=(openssl)
command -v java >/dev/null || missing+=(default-jre-headless)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)   # the postgresql backend's server
command -v faketime >/dev/null || missing+=(faketime)   # clock-skew tests and chaos; backdated test certificates
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing Debian packages: ${missing[*]}"
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd=sudo
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "deps: installing npm packages (compiles the native ZooKeeper client)"
  npm ci --no-audit --no-fund
fi
command -v go >/dev/null || { echo "deps: Go is needed to build the local control plane (or set KUBEBUILDER_ASSETS)" >&2; exit 1; }
