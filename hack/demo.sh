#!/usr/bin/env bash
# The one-command demo: a local control plane, both Helm charts, three real rag-node
# processes as the pods of the rag-node chart, the operator running out of cluster under the
# chart's ServiceAccount, the mesh example applied, sample documents written to one node, and
# a check that they reached every node. `down` stops it all.
#
# The nodes serve HTTPS with the certificate the rag-node chart generates (it names the pods
# by their DNS names, and the demo's loopback IPs), require the chart's sync token, and keep
# /admin/* behind its admin token, which only the operator (and this script) holds.
#
# The DEMO_* variables run a second, independent instance (the test suite does, so that it
# never touches a demo someone is running): its own state directory, namespaces, releases,
# addresses and port.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=${DEMO_STATE:-"$ROOT/target/demo"}
OP_NS=${DEMO_OPERATOR_NAMESPACE:-rag-sync}
OP_RELEASE=${DEMO_OPERATOR_RELEASE:-rag-sync}
NS=${DEMO_NAMESPACE:-rag-demo}
RELEASE=${DEMO_RELEASE:-rag}
read -r -a IPS <<< "${DEMO_IPS:-127.0.0.71 127.0.0.72 127.0.0.73}"
PORT=${DEMO_PORT:-8090}
DOCS=${DEMO_DOCS:-200}

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'demo: ERROR: %s\n' "$*" >&2; exit 1; }

stop_pid_file() {
  local f=$1
  [ -f "$f" ] || return 0
  local pid
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

down() {
  if [ -f "$ROOT/target/cluster/kubeconfig" ] && [ -f "$ROOT/target/cluster/bin-dir" ]; then
    export KUBECONFIG="$ROOT/target/cluster/kubeconfig"
    local bin
    bin=$(cat "$ROOT/target/cluster/bin-dir")
    # Delete the resources while the operator still runs, so its finalizer can take each
    # peer out of the nodes' configs; if the operator is gone, release the finalizers.
    "$bin/kubectl" delete syncpolicies,syncpeers --all -n "$NS" --timeout=20s >/dev/null 2>&1 || true
    for p in $("$bin/kubectl" get syncpeers -n "$NS" -o name 2>/dev/null); do
      "$bin/kubectl" patch "$p" -n "$NS" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
    done
    "$bin/kubectl" delete pods --all -n "$NS" --wait=false >/dev/null 2>&1 || true
    "$bin/helm" uninstall "$RELEASE" -n "$NS" >/dev/null 2>&1 || true
    "$bin/helm" uninstall "$OP_RELEASE" -n "$OP_NS" >/dev/null 2>&1 || true
  fi
  for f in "$STATE"/*.pid; do [ -e "$f" ] && stop_pid_file "$f"; done
  rm -rf "$STATE"
}

if [ "${1:-up}" = "down" ]; then
  down
  echo "demo stopped (the local control plane keeps running: 'make cluster-down' stops it)"
  exit 0
fi

down
mkdir -p "$STATE"

if [ -n "${RAG_SYNC_DEMO_BIN_DIR:-}" ]; then
  # The test suite runs the demo with the binaries it has just built.
  NODE_BIN="$RAG_SYNC_DEMO_BIN_DIR/rag-node"
  OP_BIN="$RAG_SYNC_DEMO_BIN_DIR/rag-sync-operator"
else
  step "Building rag-node and rag-sync-operator (release; the first build takes a few minutes)"
  (cd "$ROOT" && cargo build --release --quiet --bin rag-node --bin rag-sync-operator)
  NODE_BIN="$ROOT/target/release/rag-node"
  OP_BIN="$ROOT/target/release/rag-sync-operator"
fi
[ -x "$NODE_BIN" ] && [ -x "$OP_BIN" ] || die "missing $NODE_BIN or $OP_BIN"

step "Starting the local Kubernetes control plane (the first run builds etcd and kube-apiserver: ~5 min)"
bash "$ROOT/hack/control-plane.sh" up >/dev/null 2>"$STATE/control-plane.err" || { cat "$STATE/control-plane.err" >&2; die "the control plane did not start"; }
export KUBECONFIG="$ROOT/target/cluster/kubeconfig"
BIN=$(cat "$ROOT/target/cluster/bin-dir")
export PATH="$BIN:$PATH"
export HELM_CACHE_HOME="$STATE/helm/cache" HELM_CONFIG_HOME="$STATE/helm/config" HELM_DATA_HOME="$STATE/helm/data"

step "Installing the operator chart (CRDs, RBAC, ServiceAccount) into namespace $OP_NS, watching $NS"
kubectl get namespace "$NS" >/dev/null 2>&1 || kubectl create namespace "$NS" >/dev/null
# Scoped to the demo namespace (a Role there, no ClusterRole): the demo touches nothing else.
helm install "$OP_RELEASE" "$ROOT/charts/rag-sync-operator" -n "$OP_NS" --create-namespace \
  --set watchNamespace="$NS" --wait=hookOnly >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/syncpeers.ragsync.io crd/syncpolicies.ragsync.io >/dev/null

step "Installing the rag-node chart (StatefulSet, Service, TLS and token Secrets) as release '$RELEASE' in $NS"
helm install "$RELEASE" "$ROOT/charts/rag-node" -n "$NS" \
  --set "tls.extraIpAddresses={$(IFS=,; echo "${IPS[*]}")}" >/dev/null
secret_key() { kubectl get secret "$1" -n "$NS" -o jsonpath="{.data.${2//./\\.}}" | base64 -d; }
umask 077
secret_key "$RELEASE-sync-token" token >"$STATE/sync-token"
secret_key "$RELEASE-admin-token" token >"$STATE/admin-token"
for k in tls.crt tls.key ca.crt; do secret_key "$RELEASE-tls" "$k" >"$STATE/node-$k"; done
TOKEN=$(cat "$STATE/sync-token")
ADMIN_TOKEN=$(cat "$STATE/admin-token")
[ -n "$TOKEN" ] && [ -n "$ADMIN_TOKEN" ] || die "the rag-node chart created no tokens"
grep -q 'BEGIN CERTIFICATE' "$STATE/node-ca.crt" || die "the rag-node chart created no CA"
CURL=(curl -sf --cacert "$STATE/node-ca.crt")

STS=$(kubectl get statefulset -n "$NS" -l "app.kubernetes.io/instance=$RELEASE" -o jsonpath='{.items[0].metadata.name}')
step "Starting three rag-node processes (HTTPS, two tokens) as the pods of StatefulSet $STS (there is no kubelet here)"
for i in 0 1 2; do
  ip=${IPS[$i]}
  mkdir -p "$STATE/node-$i"
  setsid "$NODE_BIN" --listen "$ip:$PORT" --data-dir "$STATE/node-$i" --log-format json \
    --token-file "$STATE/sync-token" --admin-token-file "$STATE/admin-token" \
    --tls-cert-file "$STATE/node-tls.crt" --tls-key-file "$STATE/node-tls.key" --peer-ca-file "$STATE/node-ca.crt" \
    >"$STATE/node-$i.log" 2>&1 < /dev/null &
  echo $! >"$STATE/node-$i.pid"
done
for i in 0 1 2; do
  for _ in $(seq 100); do
    "${CURL[@]}" "https://${IPS[$i]}:$PORT/readyz" >/dev/null && break
    kill -0 "$(cat "$STATE/node-$i.pid")" 2>/dev/null || { tail -5 "$STATE/node-$i.log" >&2; die "rag-node $i exited (is ${IPS[$i]}:$PORT free?)"; }
    sleep 0.1
  done
  "${CURL[@]}" "https://${IPS[$i]}:$PORT/readyz" >/dev/null || die "rag-node $i did not become ready"
  name="$STS-$i"
  # hostname and subdomain as the StatefulSet gives them: the pod's DNS name
  # $name.$STS.$NS.svc, which the certificate holds and the operator addresses it by.
  kubectl apply -n "$NS" -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $name
  labels: {app.kubernetes.io/name: rag-node, app.kubernetes.io/instance: $RELEASE}
spec:
  hostname: $name
  subdomain: $STS
  containers: [{name: rag-node, image: rag-sync:demo}]
EOF
  kubectl patch pod "$name" -n "$NS" --subresource=status --type=merge -p \
    "{\"status\":{\"phase\":\"Running\",\"podIP\":\"${IPS[$i]}\",\"podIPs\":[{\"ip\":\"${IPS[$i]}\"}],\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}]}}" >/dev/null
  echo "    pod $name ($name.$STS.$NS.svc) -> https://${IPS[$i]}:$PORT"
done

step "Running the operator out of cluster under the chart's ServiceAccount"
SA=$(kubectl get deploy -n "$OP_NS" -l "app.kubernetes.io/instance=$OP_RELEASE" -o jsonpath='{.items[0].spec.template.spec.serviceAccountName}')
SA_TOKEN=$(kubectl create token "$SA" -n "$OP_NS" --duration=24h)
SERVER=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
kubectl config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d >"$STATE/apiserver-ca.crt"
OPCFG="$STATE/operator.kubeconfig"
KUBECONFIG="$OPCFG" kubectl config set-cluster demo --server="$SERVER" --certificate-authority="$STATE/apiserver-ca.crt" --embed-certs >/dev/null
KUBECONFIG="$OPCFG" kubectl config set-credentials "$SA" --token="$SA_TOKEN" >/dev/null
KUBECONFIG="$OPCFG" kubectl config set-context demo --cluster=demo --user="$SA" >/dev/null
KUBECONFIG="$OPCFG" kubectl config use-context demo >/dev/null
OP_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# Scoped to the demo namespace, so the demo never touches anything else on the cluster.
KUBECONFIG="$OPCFG" POD_NAMESPACE="$OP_NS" setsid "$OP_BIN" --identity demo-operator --namespace "$NS" \
  --metrics-addr "127.0.0.1:$OP_PORT" >"$STATE/operator.log" 2>&1 < /dev/null &
echo $! >"$STATE/operator.pid"
echo "    operator metrics: http://127.0.0.1:$OP_PORT/metrics (log: $STATE/operator.log)"

step "Applying examples/mesh (a SyncPeer selecting the 3 pods, a Mesh SyncPolicy with the admin token and the CA)"
# The examples name release "rag"'s objects; another release's names are swapped in.
for f in "$ROOT"/examples/mesh/*.yaml; do
  sed -e "s/app.kubernetes.io\/instance: rag$/app.kubernetes.io\/instance: $RELEASE/" \
      -e "s/name: rag-admin-token/name: $RELEASE-admin-token/" -e "s/name: rag-tls/name: $RELEASE-tls/" \
      -e "s/^  port: 8090$/  port: $PORT/" "$f"
  echo "---"
done | kubectl apply -n "$NS" -f - >/dev/null

step "Writing $DOCS sample documents to ${STS}-0"
N0="https://${IPS[0]}:$PORT"
auth=(-H "Authorization: Bearer $TOKEN" -H 'content-type: application/json')
"${CURL[@]}" -XPUT "${auth[@]}" "$N0/collections/docs" -d '{"settings": {"search": {"top_k": 8}}}' >/dev/null
writers=()
for i in $(seq 1 "$DOCS"); do
  printf '{"content": "Sample document %d about retrieval-augmented generation.", "metadata": {"n": %d}}' "$i" "$i" \
    | "${CURL[@]}" -XPUT "${auth[@]}" "$N0/collections/docs/documents/doc-$i" --data-binary @- >/dev/null &
  writers+=($!)
  if (( i % 20 == 0 )); then wait "${writers[@]}" || die "a document write failed"; writers=(); fi
done
[ ${#writers[@]} -eq 0 ] || wait "${writers[@]}" || die "a document write failed"

step "Asking for a sync now (annotation ragsync.io/sync-now) and waiting for every node to hold every document"
kubectl annotate syncpolicy mesh -n "$NS" ragsync.io/sync-now="$(date +%s%N)" --overwrite >/dev/null
count() { "${CURL[@]}" -H "Authorization: Bearer $ADMIN_TOKEN" "https://$1:$PORT/admin/status" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["documents"], s["watermark"])'; }
converged=""
for _ in $(seq 120); do
  ok=1
  for ip in "${IPS[@]}"; do
    n=$(count "$ip" | cut -d' ' -f1 || echo 0)
    [ "$n" = "$DOCS" ] || ok=0
  done
  conv=$(kubectl get syncpolicy mesh -n "$NS" -o jsonpath='{.status.conditions[?(@.type=="Converged")].status}' 2>/dev/null || true)
  if [ "$ok" = 1 ] && [ "$conv" = "True" ]; then converged=yes; break; fi
  sleep 1
done

echo
kubectl get syncpolicies,syncpeers -n "$NS" -o wide
echo
printf '%-22s %-28s %10s  %s\n' POD ENDPOINT DOCUMENTS WATERMARK
for i in 0 1 2; do
  read -r n w < <(count "${IPS[$i]}")
  printf '%-22s %-28s %10s  %s\n' "$STS-$i" "https://${IPS[$i]}:$PORT" "$n" "$w"
done
echo
[ -n "$converged" ] || die "the nodes did not converge within 2 minutes (see $STATE/*.log)"
echo "demo: converged: all 3 nodes hold all $DOCS documents and the SyncPolicy reports Converged=True"
cat <<EOF

The demo keeps running. Look around:
  export KUBECONFIG=$KUBECONFIG PATH=$BIN:\$PATH
  kubectl get syncpolicies,syncpeers -n $NS -o wide
  kubectl describe syncpolicy mesh -n $NS
  curl -s --cacert $STATE/node-ca.crt -H "Authorization: Bearer \$(cat $STATE/sync-token)" https://${IPS[1]}:$PORT/collections/docs/documents/doc-1
Stop it with: make demo-down
EOF
