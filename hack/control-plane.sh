#!/usr/bin/env bash
# A real Kubernetes control plane on loopback for the real-cluster suite: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and metrics-server (behind the aggregation layer)
# built from source (hack/control-plane/go.mod pins the versions), with a generated PKI. No
# kubelet: vk-eci runs beside it as a process.
#
# usage: hack/control-plane.sh build   build the binaries (or reuse the cached ones); print their dir
#        hack/control-plane.sh up      start the control plane, wait for /readyz, print how to use it
#        hack/control-plane.sh env     print the exports that point kubectl and the suite at it
#        hack/control-plane.sh down    stop it and remove its directory
#        hack/control-plane.sh test [cargo test args]
#                                      up, run the real-control-plane suite, down (even on failure)
#
# Binaries are cached by version and by the hash of go.mod/go.sum under
# ${VK_ECI_CONTROL_PLANE_CACHE:-$HOME/.cache/vk-eci/control-plane}, so every clone on the machine
# shares one build (a cold build takes ~10 minutes on 2 cores). The running control plane lives in
# ${VK_ECI_CONTROL_PLANE_DIR:-/tmp/vk-eci-control-plane-<hash of this checkout's path>}: PKI,
# kubeconfig, logs, etcd data. Every port is a free one picked at `up`, bound to 127.0.0.1.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
module="$root/hack/control-plane"
kubernetes_version=$(awk '$1 == "k8s.io/kubernetes" {print $2}' "$module/go.mod")
module_hash=$(cat "$module/go.mod" "$module/go.sum" | sha256sum | cut -c1-12)
cache_root=${VK_ECI_CONTROL_PLANE_CACHE:-$HOME/.cache/vk-eci/control-plane}
bin="$cache_root/$kubernetes_version-$module_hash"
state=${VK_ECI_CONTROL_PLANE_DIR:-/tmp/vk-eci-control-plane-$(printf %s "$root" | sha256sum | cut -c1-8)}
components=(etcd kube-apiserver kube-controller-manager kube-scheduler metrics-server)

log() { echo "control-plane: $*" >&2; }

build() {
  if [ -x "$bin/kube-apiserver" ]; then
    echo "$bin"
    return
  fi
  command -v go >/dev/null || { log "go is needed to build the control plane"; exit 1; }
  log "building Kubernetes $kubernetes_version, etcd and metrics-server into $bin (once per version)"
  local started=$SECONDS staging="$bin.partial.$$"
  rm -rf "$staging"
  mkdir -p "$staging"
  local minor=${kubernetes_version#v1.}
  minor=${minor%%.*}
  local version_pkg=k8s.io/component-base/version
  local ldflags="-s -w -X $version_pkg.gitVersion=$kubernetes_version -X $version_pkg.gitMajor=1"
  ldflags+=" -X $version_pkg.gitMinor=$minor -X $version_pkg.gitTreeState=clean"
  ldflags+=" -X $version_pkg.buildDate=1970-01-01T00:00:00Z"
  (cd "$module" && go build -trimpath -ldflags "$ldflags" -o "$staging/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    sigs.k8s.io/metrics-server/cmd/metrics-server)
  # etcd's main package is its server module's root, which go names after the module ("server").
  (cd "$module" && go build -trimpath -ldflags "-s -w" -o "$staging/etcd" go.etcd.io/etcd/server/v3)
  rm -rf "$bin"
  mv "$staging" "$bin"
  log "built in $((SECONDS - started)) s"
  echo "$bin"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A certificate signed by the CA `ca` (name of its files in pki/): `cert NAME CA SUBJECT USAGE [SANS]`.
cert() {
  local name=$1 ca=$2 subject=$3 usage=$4 sans=${5:-}
  local pki="$state/pki"
  openssl genrsa -out "$pki/$name.key" 2048 2>/dev/null
  openssl req -new -key "$pki/$name.key" -subj "$subject" -out "$pki/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [ -n "$sans" ] && echo "subjectAltName=$sans"
  } >"$pki/$name.ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/$ca.crt" -CAkey "$pki/$ca.key" \
    -CAcreateserial -days 30 -sha256 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$pki/$name.ext"
}

ca() {
  local name=$1 subject=$2
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$state/pki/$name.key" -out "$state/pki/$name.crt" \
    -days 30 -subj "$subject" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
}

pki() {
  mkdir -p "$state/pki"
  ca ca "/CN=vk-eci-e2e-ca"
  # The aggregation layer's CA is a separate one: a certificate from it lets a request claim any
  # user (front-proxy headers), so it must not be the CA every client certificate comes from.
  ca front-proxy-ca "/CN=vk-eci-e2e-front-proxy-ca"
  cert apiserver ca "/CN=kube-apiserver" serverAuth \
    "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert apiserver-kubelet-client ca "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
  cert front-proxy-client front-proxy-ca "/CN=front-proxy-client" clientAuth
  cert admin ca "/O=system:masters/CN=vk-eci-e2e-admin" clientAuth
  cert controller-manager ca "/CN=system:kube-controller-manager" clientAuth
  cert scheduler ca "/CN=system:kube-scheduler" clientAuth
  # The aggregator dials metrics-server by its Service's DNS name and checks it against the
  # APIService's caBundle (our CA), as in a cluster.
  cert metrics-server ca "/CN=metrics-server" serverAuth \
    "DNS:metrics-server.kube-system.svc,DNS:localhost,IP:127.0.0.1"
  cert metrics-server-client ca "/CN=system:metrics-server" clientAuth
  openssl genrsa -out "$state/pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$state/pki/sa.key" -pubout -out "$state/pki/sa.pub" 2>/dev/null
}

kubeconfig() {
  local name=$1 server=$2
  local pki="$state/pki"
  cat >"$state/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: vk-eci-e2e
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: $name
  user:
    client-certificate-data: $(base64 -w0 "$pki/$name.crt")
    client-key-data: $(base64 -w0 "$pki/$name.key")
contexts:
- name: vk-eci-e2e
  context: {cluster: vk-eci-e2e, user: $name}
current-context: vk-eci-e2e
EOF
}

start() {
  local name=$1
  shift
  setsid "$@" >"$state/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$state/pids/$name"
}

# Polls `curl ARGS` until it answers 200, for up to 120 s; on time-out shows the component's log.
await() {
  local what=$1 component=$2
  shift 2
  local deadline=$((SECONDS + 120))
  until curl -fsS -o /dev/null --max-time 2 "$@" 2>/dev/null; do
    if ! kill -0 "$(cat "$state/pids/$component")" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
      log "$what did not come up; the end of $state/logs/$component.log:"
      tail -n 30 "$state/logs/$component.log" >&2
      exit 1
    fi
    sleep 0.2
  done
}

up() {
  if [ -e "$state/pids" ]; then
    log "already up in $state (hack/control-plane.sh down first)"
    exit 1
  fi
  local binaries
  binaries=$(build)
  # A half-started control plane is stopped again.
  trap down EXIT
  mkdir -p "$state/logs" "$state/pids" "$state/etcd"
  chmod 700 "$state"
  pki
  local etcd_port etcd_peer_port api_port cm_port scheduler_port metrics_port
  etcd_port=$(free_port)
  etcd_peer_port=$(free_port)
  api_port=$(free_port)
  cm_port=$(free_port)
  scheduler_port=$(free_port)
  metrics_port=$(free_port)
  local server="https://127.0.0.1:$api_port"
  kubeconfig admin "$server"
  kubeconfig controller-manager "$server"
  kubeconfig scheduler "$server"
  kubeconfig metrics-server-client "$server"
  local pki="$state/pki"

  # etcd on plain HTTP: loopback only, and the data is thrown away at `down`.
  start etcd "$binaries/etcd" --name default --data-dir "$state/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster "default=http://127.0.0.1:$etcd_peer_port" \
    --unsafe-no-fsync --log-level warn
  await etcd etcd "http://127.0.0.1:$etcd_port/health"

  # --endpoint-reconciler-type none: the `kubernetes` Service's Endpoints may not hold a
  # loopback address, and nothing here reaches the API server through that Service.
  start kube-apiserver "$binaries/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NamespaceLifecycle,LimitRanger,ServiceAccount,NodeRestriction,DefaultTolerationSeconds,Priority,ResourceQuota,PodSecurity,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range 10.96.0.0/12 \
    --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP \
    --requestheader-client-ca-file "$pki/front-proxy-ca.crt" \
    --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$pki/front-proxy-client.crt" --proxy-client-key-file "$pki/front-proxy-client.key" \
    --endpoint-reconciler-type none \
    --allow-privileged=true \
    --profiling=false
  await kube-apiserver kube-apiserver --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "$server/readyz"

  start kube-controller-manager "$binaries/kube-controller-manager" \
    --kubeconfig "$state/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$state/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$state/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$cm_port" \
    --controllers '*' --use-service-account-credentials \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
    --leader-elect=false --profiling=false
  start kube-scheduler "$binaries/kube-scheduler" \
    --kubeconfig "$state/scheduler.kubeconfig" \
    --authentication-kubeconfig "$state/scheduler.kubeconfig" \
    --authorization-kubeconfig "$state/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$scheduler_port" \
    --leader-elect=false --profiling=false
  # Their /healthz needs no credentials; their serving certificates are self-signed.
  await kube-controller-manager kube-controller-manager -k "https://127.0.0.1:$cm_port/healthz"
  await kube-scheduler kube-scheduler -k "https://127.0.0.1:$scheduler_port/healthz"
  metrics_server "$binaries" "$metrics_port" "$server"

  trap - EXIT
  log "up in $state (API server $server). Point kubectl and the suite at it with:"
  env_exports >&2
}

# metrics-server as the upstream manifest installs it (its RBAC, an APIService for
# metrics.k8s.io), but as a process on loopback. Endpoints may not hold a loopback address, so
# its Service is an ExternalName one naming localhost, which the aggregator resolves without
# endpoint routing. It reaches each node's kubelet at its InternalIP and the port in the Node's
# status, with its own client certificate (the virtual node trusts our CA for clients); it does
# not verify kubelet serving certificates, as the API server here does not either.
metrics_server() {
  local binaries=$1 port=$2 server=$3 pki="$state/pki"
  kubectl --kubeconfig "$state/admin.kubeconfig" apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:metrics-server"}
rules:
- apiGroups: [""]
  resources: [nodes/metrics]
  verbs: [get]
- apiGroups: [""]
  resources: [pods, nodes]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:metrics-server"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:metrics-server"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:metrics-server"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "metrics-server:system:auth-delegator"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:auth-delegator"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:metrics-server"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: metrics-server-auth-reader, namespace: kube-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: extension-apiserver-authentication-reader}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:metrics-server"}]
---
apiVersion: v1
kind: Service
metadata: {name: metrics-server, namespace: kube-system}
spec: {type: ExternalName, externalName: localhost}
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.metrics.k8s.io}
spec:
  group: metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  caBundle: $(base64 -w0 "$pki/ca.crt")
  service: {name: metrics-server, namespace: kube-system, port: $port}
EOF
  # Started after its RBAC: it reads the request-header CA at start and exits if it may not.
  start metrics-server "$binaries/metrics-server" \
    --kubeconfig "$state/metrics-server-client.kubeconfig" \
    --authentication-kubeconfig "$state/metrics-server-client.kubeconfig" \
    --authorization-kubeconfig "$state/metrics-server-client.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$port" \
    --tls-cert-file "$pki/metrics-server.crt" --tls-private-key-file "$pki/metrics-server.key" \
    --kubelet-preferred-address-types InternalIP --kubelet-use-node-status-port \
    --kubelet-insecure-tls --metric-resolution 15s
  await "metrics.k8s.io through the aggregator" metrics-server \
    --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "$server/apis/metrics.k8s.io/v1beta1/nodes"
}

env_exports() {
  [ -e "$state/admin.kubeconfig" ] || { log "not up (hack/control-plane.sh up)"; exit 1; }
  echo "export KUBECONFIG=$state/admin.kubeconfig"
  echo "export VK_ECI_E2E_CONTROL_PLANE=$state/admin.kubeconfig"
}

down() {
  [ -d "$state" ] || return 0
  local component pid
  for component in "${components[@]}"; do
    [ -e "$state/pids/$component" ] || continue
    pid=$(cat "$state/pids/$component")
    kill -TERM "$pid" 2>/dev/null || true
  done
  for component in "${components[@]}"; do
    [ -e "$state/pids/$component" ] || continue
    pid=$(cat "$state/pids/$component")
    for _ in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$state"
  log "down"
}

suite() {
  # The scenarios start target/debug/vk-eci and only build it when it is missing: build it
  # now, so a suite never judges an older binary than the checkout.
  cargo build --bin vk-eci
  up
  trap down EXIT
  VK_ECI_E2E_CONTROL_PLANE="$state/admin.kubeconfig" \
    cargo test -p vk-eci-e2e --test real_cluster --test scenarios --test webhook "$@"
}

case "${1:-}" in
  build) build ;;
  up) up ;;
  env) env_exports ;;
  down) down ;;
  test) shift; suite "$@" ;;
  *) sed -n '2,17p' "$0" >&2; exit 2 ;;
esac
