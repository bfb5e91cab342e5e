#!/usr/bin/env bash
# Builds the images the end-to-end tier's node runs, without a registry, as docker archives in a cache
# outside the repository, and prints one line per image: "NAME ARCHIVE".
#
#   localhost/kubelock-pause:1        the pod sandbox image (hack/node/pause.c, static)
#   docker.io/library/busybox:1.36    Debian's busybox-static, named as the examples use it
#   localhost/kubelock:SOURCES_HASH   the project's Dockerfile, built unmodified with buildah on top of
#                                     a local localhost/node:20-bookworm-slim (its FROM)
#
# The base image is made once from Debian packages and this machine's Node 20 (mmdebstrap, with the
# installed nodejs package repacked): it is what the Dockerfile's FROM names, made locally. Machine
# specifics stay here, never in the Dockerfile: this machine's extra CA certificates and apt settings are
# copied into the base so that `apt-get` and `npm ci` inside the build reach the package registries.
# The project image is rebuilt when a file the Dockerfile copies changes (SOURCES_HASH).
#
#   KUBELOCK_CACHE  cache root (default: $XDG_CACHE_HOME/kubelock or ~/.cache/kubelock).
# Progress goes to stderr.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cache=${KUBELOCK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubelock}/node
mkdir -p "$cache/images"
work=$(mktemp -d "${TMPDIR:-/tmp}/kubelock-images-XXXXXX")
trap 'rm -rf "$work"' EXIT
say() { echo "images: $*" >&2; }

# buildah keeps its layers in the cache (so unchanged Dockerfile steps are reused), its run state apart.
storage=(--root "$cache/buildah" --runroot "$work/run" --storage-driver overlay)
bh() { buildah "${storage[@]}" "$@"; }

# image_from NAME ARCHIVE DIR_OR_TAR [buildah config args...]: a one-layer image from a directory or
# tarball, exported as a docker archive unless ARCHIVE is "".
image_from() {
  local name=$1 archive=$2 content=$3; shift 3
  local ctr; ctr=$(bh from --quiet scratch)
  bh add --quiet "$ctr" "$content" / >/dev/null
  [ $# -eq 0 ] || bh config "$@" "$ctr"
  bh commit --quiet --rm "$ctr" "$name" >/dev/null
  [ -n "$archive" ] || return 0
  rm -f "$archive.tmp"
  bh push --quiet "$name" "docker-archive:$archive.tmp:$name" >/dev/null
  mv "$archive.tmp" "$archive"
}

pause=$cache/images/pause.tar
if [ ! -f "$pause" ] || [ "$repo/hack/node/pause.c" -nt "$pause" ]; then
  say "building localhost/kubelock-pause:1"
  mkdir -p "$work/pause"
  gcc -static -Os -s -o "$work/pause/pause" "$repo/hack/node/pause.c"
  image_from localhost/kubelock-pause:1 "$pause" "$work/pause" --entrypoint '["/pause"]'
fi
echo "localhost/kubelock-pause:1 $pause"

busybox=$cache/images/busybox.tar
if [ ! -f "$busybox" ]; then
  say "building docker.io/library/busybox:1.36 from Debian's busybox-static"
  mkdir -p "$work/busybox/bin" "$work/busybox/tmp"
  cp /bin/busybox "$work/busybox/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [ -e "$work/busybox/bin/$applet" ] || ln -s busybox "$work/busybox/bin/$applet"
  done
  chmod 1777 "$work/busybox/tmp"
  image_from docker.io/library/busybox:1.36 "$busybox" "$work/busybox" --cmd '["sh"]' --env PATH=/bin
fi
echo "docker.io/library/busybox:1.36 $busybox"

# The base, named like the Dockerfile's FROM: a Debian bookworm root filesystem with this machine's nodejs
# package (made once per nodejs version), and on top a layer of this machine's settings: its CA
# certificates and apt "Acquire" options, and npm's nodedir (node-gyp builds against the installed
# headers instead of downloading them). Remade when either changes.
node_version=$(dpkg-query -W -f='${Version}' nodejs)
rootfs=$cache/images/bookworm-nodejs-$node_version
if [ ! -d "$rootfs" ]; then
  say "building a Debian bookworm root filesystem with nodejs $node_version (a few minutes)"
  (cd "$work" && dpkg-repack nodejs >/dev/null 2>&1)
  deb=$(ls "$work"/nodejs_*.deb)
  # The repacked package lacks files npm's own updates added: copy the installed npm over it.
  rm -rf "$cache"/images/bookworm-nodejs-*
  mmdebstrap --quiet --variant=minbase --format=directory --include="ca-certificates,$deb" \
    --hook-dir=/usr/share/mmdebstrap/hooks/file-mirror-automount \
    --aptopt='Acquire::Check-Valid-Until "false"' \
    --customize-hook="rm -rf \"\$1/usr/lib/node_modules/npm\" && cp -a /usr/lib/node_modules/npm \"\$1/usr/lib/node_modules/npm\"" \
    --customize-hook="rm -rf \"\$1\"/var/lib/apt/lists/* \"\$1\"/var/cache/apt/*" \
    bookworm "$rootfs.tmp" /etc/apt/sources.list.d/debian.sources
  mv "$rootfs.tmp" "$rootfs"
fi
machine=$work/machine
mkdir -p "$machine/etc/ssl/certs" "$machine/usr/local/share/ca-certificates" "$machine/etc/apt/apt.conf.d" "$machine/usr/etc"
cp /etc/ssl/certs/ca-certificates.crt "$machine/etc/ssl/certs/"
cp /usr/local/share/ca-certificates/*.crt "$machine/usr/local/share/ca-certificates/" 2>/dev/null || true
apt-config dump | grep '^Acquire::' > "$machine/etc/apt/apt.conf.d/99machine" || true
echo "nodedir=/usr" > "$machine/usr/etc/npmrc"
base_id="$node_version $(cd "$machine" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)"
if [ "$(cat "$cache/images/base.id" 2>/dev/null)" != "$base_id" ] || ! bh inspect --type image localhost/node:20-bookworm-slim >/dev/null 2>&1; then
  say "building localhost/node:20-bookworm-slim"
  ctr=$(bh from --quiet scratch)
  bh add --quiet "$ctr" "$rootfs" / >/dev/null
  bh add --quiet "$ctr" "$machine" / >/dev/null
  bh config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt --cmd '["node"]' "$ctr"
  bh commit --quiet --rm "$ctr" localhost/node:20-bookworm-slim >/dev/null
  echo "$base_id" > "$cache/images/base.id"
fi

# The project: the Dockerfile and what it copies decide the tag.
hash=$(cd "$repo" && find Dockerfile .dockerignore package.json package-lock.json tsconfig.json tsconfig.build.json src crds \
  -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)
project=$cache/images/kubelock-$hash.tar
if [ ! -f "$project" ]; then
  say "building localhost/kubelock:$hash from the Dockerfile with buildah (about a minute with cached layers)"
  bh bud --quiet --isolation chroot --network host --pull-never --layers -t "localhost/kubelock:$hash" "$repo" >&2
  rm -f "$cache"/images/kubelock-*.tar "$project.tmp"
  bh push --quiet "localhost/kubelock:$hash" "docker-archive:$project.tmp:localhost/kubelock:$hash" >/dev/null
  mv "$project.tmp" "$project"
fi
echo "localhost/kubelock:$hash $project"
