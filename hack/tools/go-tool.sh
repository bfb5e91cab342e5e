# Shared by hack/tools/*.sh (sourced): builds a Go tool from its module once, into a cache outside the
# repository, and prints the binary's path.
#
#   go_tool NAME OVERRIDE_VAR VERSION PACKAGE@VERSION LDFLAGS
#
# OVERRIDE_VAR names a variable that may hold a ready binary: printed as is, nothing is built.
# KUBELOCK_CACHE is the cache root (default: $XDG_CACHE_HOME/kubelock or ~/.cache/kubelock).
# Progress goes to stderr; the path alone goes to stdout.
go_tool() {
  local name=$1 override=${!2:-} version=$3 package=$4 ldflags=$5
  if [ -n "$override" ]; then
    [ -x "$override" ] || { echo "$2=$override is not an executable" >&2; return 1; }
    echo "$override"
    return 0
  fi
  local cache=${KUBELOCK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubelock}
  local out="$cache/tools/$name-$version" bin
  bin="$out/$name"
  if [ -x "$bin" ]; then
    echo "$bin"
    return 0
  fi
  mkdir -p "$out"
  echo "$name: building $name $version from ${package%@*} (a cold build takes a few minutes) ..." >&2
  local start=$SECONDS scratch
  # `go install module@version` builds with the module's own go.mod and go.sum (checked against the checksum
  # database), in a scratch GOBIN so a half-built binary never lands at the cached path.
  scratch=$(mktemp -d "$out/build.XXXXXX")
  GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOBIN="$scratch" GOFLAGS="-trimpath" \
    go install -ldflags "-s -w $ldflags" "$package" || { rm -rf "$scratch"; return 1; }
  mv "$scratch/$name" "$bin"
  rm -rf "$scratch"
  echo "$name: built $name $version in $((SECONDS - start))s" >&2
  echo "$bin"
}
