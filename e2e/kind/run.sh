#!/usr/bin/env bash
# The kind suite: a real cluster, images built from this repository, the Helm chart,
# the examples applied with kubectl, conditions awaited, an invocation checked, status,
# metrics and a pod's share allocation checked. Needs docker, kind, kubectl, helm.
#
#   e2e/kind/run.sh            # create cluster kaas-e2e, test, delete it
#   KAAS_KEEP_CLUSTER=1 e2e/kind/run.sh   # keep the cluster for a look afterwards
set -euo pipefail
cd "$(dirname "$0")/../.."
cluster=${KAAS_KIND_CLUSTER:-kaas-e2e}
ns=kaas-system
repo=ghcr.io/kaas-dev
tag=e2e
for tool in docker kind kubectl helm curl python3; do
  command -v "$tool" >/dev/null || { echo "kind suite: $tool is required" >&2; exit 2; }
done
step() { printf '\n=== %s\n' "$*"; }
cleanup() {
  [ -n "${pf:-}" ] && kill "$pf" 2>/dev/null || true
  if [ "${KAAS_KEEP_CLUSTER:-0}" != 1 ]; then kind delete cluster --name "$cluster" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

step "cluster $cluster"
kind get clusters | grep -qx "$cluster" || kind create cluster --name "$cluster" --wait 180s
kubectl config use-context "kind-$cluster"

step "images"
docker build --target operator -t "$repo/kaas-operator:$tag" .
docker build --target device-plugin -t "$repo/kaas-device-plugin:$tag" .
kind load docker-image --name "$cluster" "$repo/kaas-operator:$tag" "$repo/kaas-device-plugin:$tag"

step "helm install"
helm upgrade --install kaas charts/kaas --namespace "$ns" --create-namespace \
  --set image.tag="$tag" --set image.pullPolicy=Never \
  --set devicePlugin.backend=wasm --set devicePlugin.logFormat=text --set operator.logFormat=text \
  --wait --timeout 5m

step "examples"
kubectl apply -f examples/cluster/accelerator-classes.yaml
kubectl apply -f examples/functions/
node=$(kubectl get nodes -o jsonpath='{.items[0].metadata.name}')
kubectl wait "kaasnode/$node" --for=jsonpath='{.status.healthyDevices}'=1 --timeout=120s
kubectl wait kf --all -n default --for=condition=Admitted --timeout=120s
kubectl wait kf --all -n default --for=condition=Ready --timeout=120s
kubectl get kf -n default
kubectl get kaasnodes,acceleratorclasses,schedulingpolicies

step "allocatable shares on $node"
shares=$(kubectl get node "$node" -o jsonpath='{.status.allocatable.kaas\.dev/cpu-share}')
[ "$shares" = 4 ] || { echo "expected 4 kaas.dev/cpu-share, got '$shares'" >&2; exit 1; }

step "invoke dense-relu through the gateway"
kubectl -n "$ns" port-forward svc/kaas-gateway 18080:8080 19100:9100 >/dev/null &
pf=$!
for _ in $(seq 50); do curl -sf localhost:19100/healthz >/dev/null && break; sleep 0.2; done
x=$(python3 -c 'import base64,struct;print(base64.b64encode(struct.pack("<32f",*[1.0]*32)).decode())')
# Invoking needs a token whose subject holds verb invoke (ClusterRole kaas-invoker).
kubectl -n default create serviceaccount e2e-caller
kubectl -n default create rolebinding e2e-invokers --clusterrole=kaas-invoker --serviceaccount=default:e2e-caller
token=$(kubectl -n default create token e2e-caller)
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST localhost:18080/v1/namespaces/default/functions/dense-relu:invoke \
  -H 'content-type: application/json' -d "{\"inputs\": {\"x\": \"$x\"}}")
[ "$code" = 401 ] || { echo "without a token: expected 401, got $code" >&2; exit 1; }
for _ in $(seq 30); do
  out=$(curl -s -X POST localhost:18080/v1/namespaces/default/functions/dense-relu:invoke \
    -H "authorization: Bearer $token" \
    -H 'content-type: application/json' -d "{\"inputs\": {\"x\": \"$x\"}}") && echo "$out" | grep -q '"outputs"' && break
  sleep 1
done
echo "$out"
want=AAAAAAAAAAAAACA/AAAAAAAAQD8AAAAAAAAAAAAAwD4AAAAAAAAAPwAAAAAAAAAAAAAAPgAAYD8AAIA+AAAAAAAAAAAAAAAAAAAgPwAAAAAAAAAAAACAPgAAAAAAAMA+AACQPwAAAAAAAAAAAAAAAAAAAD4AAGA/AAAAAAAAAAA=
echo "$out" | python3 -c "import json,sys; y=json.load(sys.stdin)['outputs']['y']; sys.exit(0 if y=='$want' else 'wrong y: '+y)"

step "status and metrics"
kubectl get kf dense-relu -n default -o jsonpath='{.status.placements[0].node}' | grep -qx "$node"
curl -s localhost:19100/metrics | grep -E '^kaas_gateway_invocations_total\{.*outcome="ok"' 

step "a pod gets a share and the executor socket"
kubectl apply -f - <<'YAML'
apiVersion: v1
kind: Pod
metadata: { name: kaas-share-check, namespace: default }
spec:
  restartPolicy: Never
  containers:
    - name: check
      image: busybox:1.36
      command: ["sh", "-c", "echo $KAAS_SHARE_IDS; test -S $KAAS_EXECUTOR_SOCKET"]
      resources: { limits: { kaas.dev/cpu-share: 1 } }
YAML
kubectl wait pod/kaas-share-check -n default --for=jsonpath='{.status.phase}'=Succeeded --timeout=120s
kubectl logs kaas-share-check -n default | grep -E '^[a-z0-9-]+-s[0-9]+$'

step "finalizer: deleting a function evicts it"
kubectl delete kf saxpy -n default --timeout=60s
echo "kind suite passed"
