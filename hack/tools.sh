#!/usr/bin/env bash
# tools.sh builds the test world's heavy binaries from the Go module proxy, once,
# into a cache outside the repository keyed by tool version, Go version and a
# hash of the wrapper module's go.sum. It prints the directory holding the binaries.
#
#   hack/tools.sh kube-apiserver|etcd|teleport|cnpg|pgbouncer|golangci-lint|helm|kubectl|promrules
#   hack/tools.sh monitoring-crds
#
# kube-apiserver also holds kube-controller-manager (same wrapper module).
# kubectl is built from k8s.io/kubectl at the same Kubernetes version
# (test/tools/kubectl; TestWalkthrough runs the README's commands with it).
# monitoring-crds builds nothing: it prints the Prometheus operator's CRD
# directory in the module cache (downloaded once, checked against a pinned hash).
#
# Each build runs in a temporary directory and is moved into place only when it
# succeeded, so an interrupted build never leaves a half-written cache entry.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${CNPG_TELEPORT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cnpg-teleport}
export GOWORK=off
unset GONOSUMDB GONOSUMCHECK GOINSECURE

KUBE_VERSION=v1.37.2
ETCD_VERSION=v3.7.2
TELEPORT_VERSION=v13.3.8
GOLANGCI_VERSION=v2.15.0
CNPG_VERSION=v1.30.0
# Helm v3 (the chart tests: lint, template, install): the major most installs run;
# v4 is served too, but changes install defaults (server-side apply) users may not have yet.
HELM_VERSION=v3.22.0
# PgBouncer >= 1.20 (CNPG's pgbouncer.ini needs auth_dbname); Debian 12 ships 1.18,
# so it is built from Debian 13's source package, against the machine's own libraries.
PGBOUNCER_VERSION=1.24.1-1+deb13u2
# The rule checker of the chart's PrometheusRule (test/tools/promrules): Prometheus's own rulefmt and PromQL parser.
PROMETHEUS_VERSION=v0.316.0
# The Prometheus operator's CRDs (ServiceMonitor, PrometheusRule), read from its module; not in the
# project's go.mod, which would pull the operator's dependencies into the controller's module.
PROMETHEUS_OPERATOR_VERSION=v0.94.1
PROMETHEUS_OPERATOR_SUM=h1:QEIb2wenPH+SdMN1xMf8l4Pmj00YYXXI6HlbLlQWkww=

gover=$(go env GOVERSION)

key() { # key NAME VERSION WRAPPERDIR
	local sum=none
	[ -f "$3/go.sum" ] && sum=$(sha256sum "$3/go.sum" | cut -c1-12)
	echo "$cache/$1-$2-$gover-$sum"
}

log() { echo "[tools] $*" >&2; }

build() { # build NAME VERSION WRAPPERDIR EXPECTED BINARY... ; body in build_NAME
	local name=$1 version=$2 dir=$3 expected=$4
	shift 4
	local dest
	dest=$(key "$name" "$version" "$dir")
	local ok=1
	for b in "$@"; do [ -x "$dest/$b" ] || ok=0; done
	if [ $ok = 1 ]; then
		echo "$dest"
		return
	fi
	mkdir -p "$cache"
	local tmp
	tmp=$(mktemp -d "$cache/.build-$name-XXXXXX")
	log "building $name $version (cold: about $expected on 2 cores; cached afterwards in $dest)"
	local t0=$SECONDS
	# The ticker kills its own sleep when stopped: a sleep left running would
	# hold stdout and stderr open, and a caller reading them ($(...),
	# world.ToolDir) would wait up to a minute after the build.
	(
		trap 'kill "$s" 2>/dev/null; exit 0' TERM
		while :; do
			sleep 60 &
			s=$!
			wait "$s"
			log "  still building $name ($((SECONDS - t0))s)"
		done
	) &
	local ticker=$!
	# The build's CPU (bash's time: user and system seconds of every process it ran) goes into the
	# "built" line: what a cold make test spends where (hack/test.sh prints each stage's).
	local TIMEFORMAT='%U %S' cpu=() rc=0
	{ time "build_${name//-/_}" "$dir" "$tmp" >"$tmp.log" 2>&1 || rc=$?; } 2>"$tmp.cpu"
	read -ra cpu <"$tmp.cpu" || true
	rm -f "$tmp.cpu"
	if [ $rc != 0 ]; then
		kill "$ticker" 2>/dev/null || true
		cat "$tmp.log" >&2
		rm -rf "$tmp" "$tmp.log"
		log "building $name failed"
		exit 1
	fi
	kill "$ticker" 2>/dev/null || true
	rm -f "$tmp.log"
	rm -rf "$dest"
	mv "$tmp" "$dest"
	log "built $name in $((SECONDS - t0))s (CPU ${cpu[0]:-?}s user + ${cpu[1]:-?}s system)"
	echo "$dest"
}

build_kube_apiserver() {
	local v=k8s.io/component-base/version c=k8s.io/client-go/pkg/version
	local ld="-s -w"
	for p in $v $c; do
		ld+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=37"
	done
	# One go build for both: their own packages compile and the two links run side by side.
	# No -trimpath, and the wrapper module requires the root module's versions where they are newer
	# (test/tools/kube-apiserver/go.mod): the ~900 packages it shares with the project's own builds
	# (client-go, apimachinery, grpc, x/net...) then have the same build IDs and compile once for both.
	(cd "$1" && CGO_ENABLED=0 go build -ldflags "$ld" -o "$2/" \
		k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager)
}

build_kubectl() {
	# The version variables as build_kube_apiserver sets them, so `kubectl version` says v1.37.2.
	local v=k8s.io/component-base/version c=k8s.io/client-go/pkg/version
	local ld="-s -w"
	for p in $v $c; do
		ld+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=37"
	done
	# As build_kube_apiserver (no -trimpath, its versions): the ~500 packages they share compile once
	# (likewise etcd, helm, and CNPG but for Kubernetes' own modules).
	(cd "$1" && CGO_ENABLED=0 go build -ldflags "$ld" -o "$2/kubectl" .)
}

build_cnpg() {
	# The operator finds its architecture by globbing operator/manager_* relative to
	# its working directory; the world links that name to this binary.
	# No -trimpath, and kube-apiserver's versions of what is not Kubernetes' (grpc, protobuf, x/net...; CNPG
	# v1.30.0 needs its own k8s.io v0.36 and controller-runtime v0.24): the ~200 packages they share compile once.
	(cd "$1" && CGO_ENABLED=0 go build -ldflags "-s -w" -o "$2/manager" github.com/cloudnative-pg/cloudnative-pg/cmd/manager)
}

# debian_uri prints the machine's own Debian archive URI (from its apt sources).
debian_uri() {
	local uri
	uri=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v -- '-security' | grep '/debian' | head -n1)
	[ -n "$uri" ] || uri=$(awk '$1 == "deb" && $2 ~ /\/debian$/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null)
	[ -n "$uri" ] || { echo "no Debian archive in the apt sources" >&2; return 1; }
	echo "$uri"
}

build_pgbouncer() {
	local work=$2/.src sudo=""
	[ "$(id -u)" = 0 ] || sudo=sudo
	# Build dependencies, from the machine's own (bookworm) sources.
	local need=""
	for p in build-essential libevent-dev libssl-dev pkg-config dpkg-dev; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need="$need $p"
	done
	if [ -n "$need" ]; then
		$sudo apt-get update -qq
		DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $need
	fi
	# The source package, through private apt lists: the machine's sources stay bookworm-only.
	mkdir -p "$work/lists/partial" "$work/src"
	echo "deb-src $(debian_uri) trixie main" >"$work/sources.list"
	local apt=(-o Dir::Etc::sourcelist="$work/sources.list" -o Dir::Etc::sourceparts=- -o Dir::State::Lists="$work/lists"
		-o APT::Get::List-Cleanup=0)
	apt-get "${apt[@]}" update
	(cd "$work/src" && apt-get "${apt[@]}" source --download-only "pgbouncer=$PGBOUNCER_VERSION" &&
		dpkg-source -x --no-check ./pgbouncer_*.dsc pgbouncer)
	(cd "$work/src/pgbouncer" &&
		./configure --prefix=/usr --without-cares --without-pam --without-ldap --without-systemd &&
		make -j2 && cp pgbouncer "$2/pgbouncer")
	rm -rf "$work"
	"$2/pgbouncer" --version
}

build_etcd() {
	# As build_kube_apiserver (no -trimpath, its versions but etcd's own): the ~240 packages they share compile once.
	(cd "$1" && CGO_ENABLED=0 go build -ldflags "-s -w" -o "$2/etcd" go.etcd.io/etcd/server/v3)
}

build_teleport() {
	# gcc is needed (sqlite backend); -checklinkname=0 for the teleport launcher (tctl and tsh need
	# it not, and lose nothing by it). One go build for the three: their own packages compile and
	# their links run side by side.
	(cd "$1" && CGO_ENABLED=1 go build -trimpath -ldflags='-s -w -checklinkname=0' -o "$2/" \
		./cmd/teleport ./cmd/tctl github.com/gravitational/teleport/tool/tsh)
}

build_helm() {
	# As Helm's Makefile: its default Kubernetes version (helm template, lint) from its client-go (v0.37 -> 1.37).
	local ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" p
	for p in pkg/lint/rules pkg/chartutil; do
		ld+=" -X helm.sh/helm/v3/$p.k8sVersionMajor=1 -X helm.sh/helm/v3/$p.k8sVersionMinor=37"
	done
	# As build_kube_apiserver (no -trimpath, its versions): the ~440 packages they share compile once.
	(cd "$1" && CGO_ENABLED=0 go build -ldflags "$ld" -o "$2/helm" helm.sh/helm/v3/cmd/helm)
}

build_promrules() {
	(cd "$1" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$2/promrules" .)
}

# monitoring_crds prints the directory of the Prometheus operator's CRDs: `go mod download` of the exact
# version (run outside any module, so no go.mod changes; offline once in the module cache), its hash checked
# against the pinned one.
monitoring_crds() {
	local m=github.com/prometheus-operator/prometheus-operator json dir sum
	json=$(cd / && GOFLAGS=-mod=mod go mod download -json "$m@$PROMETHEUS_OPERATOR_VERSION") ||
		{ log "go mod download $m@$PROMETHEUS_OPERATOR_VERSION failed: $json"; exit 1; }
	dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$json")
	sum=$(sed -n 's/^[[:space:]]*"Sum": "\(.*\)",$/\1/p' <<<"$json")
	[ "$sum" = "$PROMETHEUS_OPERATOR_SUM" ] ||
		{ log "$m@$PROMETHEUS_OPERATOR_VERSION: hash $sum, want $PROMETHEUS_OPERATOR_SUM"; exit 1; }
	dir=$dir/example/prometheus-operator-crd
	[ -f "$dir/monitoring.coreos.com_servicemonitors.yaml" ] && [ -f "$dir/monitoring.coreos.com_prometheusrules.yaml" ] ||
		{ log "$dir: no ServiceMonitor or PrometheusRule CRD"; exit 1; }
	echo "$dir"
}

build_golangci_lint() {
	GOBIN=$2 go install "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$GOLANGCI_VERSION"
}

case "${1:-}" in
kube-apiserver) build kube-apiserver "$KUBE_VERSION" "$root/test/tools/kube-apiserver" "11 min" kube-apiserver kube-controller-manager ;;
etcd) build etcd "$ETCD_VERSION" "$root/test/tools/etcd" "1 min" etcd ;;
teleport)
	if [ -n "${TELEPORT_BIN_DIR:-}" ]; then
		for b in teleport tctl tsh; do
			[ -x "$TELEPORT_BIN_DIR/$b" ] || { log "TELEPORT_BIN_DIR=$TELEPORT_BIN_DIR has no $b"; exit 1; }
		done
		"$TELEPORT_BIN_DIR/teleport" version | grep -q "Teleport $TELEPORT_VERSION" ||
			{ log "TELEPORT_BIN_DIR: not Teleport $TELEPORT_VERSION"; exit 1; }
		echo "$TELEPORT_BIN_DIR"
		exit 0
	fi
	build teleport "$TELEPORT_VERSION" "$root/test/tools/teleport" "12 min" teleport tctl tsh
	;;
cnpg) build cnpg "$CNPG_VERSION" "$root/test/tools/cnpg" "5 min" manager ;;
pgbouncer) build pgbouncer "$PGBOUNCER_VERSION" /nonexistent "1 min" pgbouncer ;;
golangci-lint) build golangci-lint "$GOLANGCI_VERSION" /nonexistent "3 min" golangci-lint ;;
helm) build helm "$HELM_VERSION" "$root/test/tools/helm" "3 min" helm ;;
kubectl) build kubectl "$KUBE_VERSION" "$root/test/tools/kubectl" "6 min" kubectl ;;
promrules)
	# Keyed by the checker's source too: it lives in the wrapper module.
	build promrules "$PROMETHEUS_VERSION-$(cat "$root"/test/tools/promrules/*.go | sha256sum | cut -c1-8)" \
		"$root/test/tools/promrules" "1 min" promrules
	;;
monitoring-crds) monitoring_crds ;;
*)
	echo "usage: $0 kube-apiserver|etcd|teleport|cnpg|pgbouncer|golangci-lint|helm|kubectl|promrules|monitoring-crds" >&2
	exit 2
	;;
esac
