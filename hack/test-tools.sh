#!/usr/bin/env bash
# Ensures a third-party test tool built from its Go module exists in a versioned cache
# directory outside the repository; prints the binary's path on the last line of stdout.
#   bash hack/test-tools.sh kube-score
set -euo pipefail

KUBE_SCORE_VERSION=${KUBE_SCORE_VERSION:-v1.20.0}
CACHE_ROOT=${RAG_SYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rag-sync}

log() { printf '[test-tools] %s\n' "$*" >&2; }
die() { printf '[test-tools] ERROR: %s\n' "$*" >&2; exit 1; }

install_go_tool() { # name module version
  local name=$1 module=$2 version=$3 dir="$CACHE_ROOT/$1-$3"
  if [ ! -x "$dir/$name" ]; then
    command -v go >/dev/null 2>&1 || die "Go is needed to build $name"
    log "building $name $version (first time only)"
    mkdir -p "$dir"
    GOBIN="$dir" GOFLAGS=-mod=mod go install "$module@$version" >&2 || die "go install $module@$version failed"
  fi
  echo "$dir/$name"
}

case "${1:-}" in
  kube-score) install_go_tool kube-score github.com/zegl/kube-score/cmd/kube-score "$KUBE_SCORE_VERSION" ;;
  *) die "usage: $0 kube-score" ;;
esac
