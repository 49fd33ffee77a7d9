#!/usr/bin/env bash
# Ensures a third-party test tool (built from its Go module, or installed from PyPI into a
# virtualenv) exists in a versioned cache
# directory outside the repository; prints the binary's path on the last line of stdout.
#   bash hack/test-tools.sh kube-score   (or toxiproxy, or schemathesis)
set -euo pipefail

KUBE_SCORE_VERSION=${KUBE_SCORE_VERSION:-v1.20.0}
# Named, not @latest: the module's latest tag resolves to an old release.
TOXIPROXY_VERSION=${TOXIPROXY_VERSION:-v2.12.0}
SCHEMATHESIS_VERSION=${SCHEMATHESIS_VERSION:-4.32.5}
CACHE_ROOT=${RAG_SYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rag-sync}

log() { printf '[test-tools] %s\n' "$*" >&2; }
die() { printf '[test-tools] ERROR: %s\n' "$*" >&2; exit 1; }

install_go_tool() { # name module version [binary go install names it, if not name]
  local name=$1 module=$2 version=$3 built=${4:-$1} dir="$CACHE_ROOT/$1-$3"
  if [ ! -x "$dir/$name" ]; then
    command -v go >/dev/null 2>&1 || die "Go is needed to build $name"
    log "building $name $version (first time only)"
    mkdir -p "$dir"
    GOBIN="$dir" GOFLAGS=-mod=mod go install "$module@$version" >&2 || die "go install $module@$version failed"
    if [ "$built" != "$name" ]; then mv -f "$dir/$built" "$dir/$name"; fi
  fi
  echo "$dir/$name"
}

# A PyPI tool in its own virtualenv; prints the path of its entry point.
install_py_tool() { # name version
  local name=$1 version=$2 dir="$CACHE_ROOT/$1-$2"
  if [ ! -x "$dir/venv/bin/$name" ]; then
    command -v python3 >/dev/null 2>&1 || die "Python 3 is needed to install $name"
    log "installing $name $version into $dir/venv (first time only)"
    rm -rf "$dir" && mkdir -p "$dir"
    python3 -m venv "$dir/venv" >&2 || die "python3 -m venv failed"
    "$dir/venv/bin/pip" install --quiet --disable-pip-version-check "$name==$version" >&2 \
      || { rm -rf "$dir"; die "pip install $name==$version failed"; }
  fi
  echo "$dir/venv/bin/$name"
}

case "${1:-}" in
  schemathesis) install_py_tool schemathesis "$SCHEMATHESIS_VERSION" ;;
  kube-score) install_go_tool kube-score github.com/zegl/kube-score/cmd/kube-score "$KUBE_SCORE_VERSION" ;;
  toxiproxy) install_go_tool toxiproxy-server github.com/Shopify/toxiproxy/v2/cmd/server "$TOXIPROXY_VERSION" server ;;
  *) die "usage: $0 kube-score|toxiproxy|schemathesis" ;;
esac
