# cnpg-teleport
#
#   make demo   the whole chain on one machine (no Kubernetes cluster needed)
#   make test   unit, integration and end-to-end tests against the real test world
#
# Heavy test-world binaries (kube-apiserver and kube-controller-manager, etcd,
# CNPG's manager, PgBouncer, Teleport, Helm, kubectl, golangci-lint, the Prometheus rule checker) are
# built once from the Go module proxy by hack/tools.sh and cached outside the
# repository in $${XDG_CACHE_HOME:-$$HOME/.cache}/cnpg-teleport, keyed by version.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
export GOWORK := off
export CGO_ENABLED ?= 0
# No DWARF in what the compiler writes: the binaries are linked with -s -w (or run by go test) and never
# read it, and a cold make test compiles ~5% less. Every build make runs (hack/tools.sh's, the project's, the
# tests') takes the same flag, so the packages they share keep one build ID and compile once.
export GOFLAGS := $(strip $(GOFLAGS) -gcflags=all=-dwarf=false)

GO ?= go
TOOLS := hack/tools.sh
BIN := $(CURDIR)/bin
TEST_TIMEOUT ?= 30m
MODULE := github.com/cnpg-teleport/cnpg-teleport
# The packages make race runs (unit and envtest tests); make test runs the rest without -race.
RACE_DIRS := controllers|teleport|certs|clusterspec|dbspec|pgrules

# Host tools the test world needs, by Debian package.
# (PgBouncer is built by hack/tools.sh: CNPG needs >= 1.20, Debian 12 has 1.18.)
HOST_PACKAGES := postgresql util-linux iproute2 openssl curl jq gcc bsdutils ca-certificates

.PHONY: all build test checks race-bin rest e2e unit race lint vet deps tools world-tools help clean demo demo-verify image image-test bench fuzz

all: build

help:
	@sed -n '1,10p' Makefile

build:
	$(GO) build ./...

## deps: install the Debian packages the test world needs, when missing.
deps:
	@missing=""; \
	for p in $(HOST_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "[deps] installing:$$missing"; \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null; \
	fi

## world-tools: build (or find cached) the test world's binaries and the test helpers.
world-tools: deps
	@$(TOOLS) kube-apiserver >/dev/null
	@$(TOOLS) etcd >/dev/null
	@$(TOOLS) cnpg >/dev/null
	@$(TOOLS) pgbouncer >/dev/null
	@$(TOOLS) teleport >/dev/null
	@$(TOOLS) helm >/dev/null
	@$(TOOLS) monitoring-crds >/dev/null
	@$(TOOLS) kubectl >/dev/null
	@echo "[tools] building bin/cert-manager and bin/cnpg-teleport (cold: about 5 min on 2 cores, then seconds)"
	@$(GO) build -o $(BIN)/cert-manager ./test/cmd/cert-manager
	@$(GO) build -o $(BIN)/cnpg-teleport ./cmd/cnpg-teleport

tools: world-tools
	@$(TOOLS) golangci-lint >/dev/null
	@$(TOOLS) promrules >/dev/null

WORLD_ENV = KUBE_APISERVER_DIR=$$($(TOOLS) kube-apiserver) ETCD_DIR=$$($(TOOLS) etcd) \
	CNPG_BIN_DIR=$$($(TOOLS) cnpg) PGBOUNCER_BIN_DIR=$$($(TOOLS) pgbouncer) \
	TELEPORT_BIN_DIR=$$($(TOOLS) teleport) HELM_BIN_DIR=$$($(TOOLS) helm) KUBECTL_BIN_DIR=$$($(TOOLS) kubectl) \
	CERT_MANAGER_BIN=$(BIN)/cert-manager CNPG_TELEPORT_BIN=$(BIN)/cnpg-teleport MONITORING_CRDS_DIR=$$($(TOOLS) monitoring-crds)

## image: the controller image without a container engine (hack/image): an OCI layout in bin/image and
## bin/cnpg-teleport-image.tar for docker/podman load; prints its digest (the same binary, the same digest).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
IMAGE_TAG ?= cnpg-teleport:$(subst +,-,$(VERSION))
image: deps
	@mkdir -p $(BIN)
	GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN)/image-cnpg-teleport ./cmd/cnpg-teleport
	cd hack/image && $(GO) run . -binary $(BIN)/image-cnpg-teleport -layout $(BIN)/image -tar $(BIN)/cnpg-teleport-image.tar -tag $(IMAGE_TAG)

## image-test: vet, lint and the tests of the image builder (hack/image: its own module, so not in ./...).
image-test: deps
	cd hack/image && $(GO) vet ./... && $$($(CURDIR)/$(TOOLS) golangci-lint)/golangci-lint run ./... && $(GO) test -vet=off -count=1 ./...

vet:
	$(GO) vet ./...

lint:
	@$$($(TOOLS) golangci-lint)/golangci-lint run ./...

## test: everything CI runs (hack/test.sh): the tools, make race, the race-built controller, make rest and
## the end-to-end tests one after the other; from the start, under chrt --idle, the checks that need only
## CPU (make checks: vet, lint, image, fuzz), which fill what the builds and the waiting tests leave.
## `go vet ./...` vets every package and its tests once; the test runs turn go test's own vet off (-vet=off):
## it would vet every dependency again for each build (plain, -race, fuzz), minutes when the Go cache is cold.
test:
	@MAKE=$(MAKE) hack/test.sh

## checks: the checks that need only CPU, no test world: go vet, golangci-lint, the image builder's tests, fuzz.
checks: export TIMEFORMAT := [checks]   CPU %Us user + %Ss system, %Rs
checks:
	@echo "[checks] go vet"; time $(GO) vet ./...
	@echo "[checks] golangci-lint"; time $$($(TOOLS) golangci-lint)/golangci-lint run ./...
	@echo "[checks] image (hack/image)"; time $(MAKE) --no-print-directory image-test
	@echo "[checks] fuzz ($(FUZZ_TIME) a target)"; time $(MAKE) --no-print-directory fuzz
	@echo "[checks] ok"

## race-bin: the controller built with -race (make test's end-to-end tests run it).
race-bin:
	CGO_ENABLED=1 $(GO) build -race -o $(BIN)/cnpg-teleport-race ./cmd/cnpg-teleport

## rest: the packages make race does not run and that are not end-to-end: commands, chart, world.
rest: world-tools
	$(WORLD_ENV) CNPG_TELEPORT_BIN=$(BIN)/cnpg-teleport-race PROMRULES_BIN_DIR=$$($(TOOLS) promrules) \
	  $(GO) test -vet=off -count=1 -timeout $(TEST_TIMEOUT) $$($(GO) list ./... | grep -vE '^$(MODULE)/($(RACE_DIRS)|test/e2e)(/|$$)')

## e2e: the end-to-end tests (hack/e2e.sh: one test a process, each its own world and network namespace, each
## printed with its time), E2E_JOBS at a time (1: two at a time is ~25% faster on 2 cores, but slows each test
## enough to fail a timing-bound one); E2E_RUN picks tests by name. CNPG_TELEPORT_BIN picks the controller
## binary (make test: the -race one).
E2E_JOBS ?= 1
E2E_RUN ?= ^Test
CNPG_TELEPORT_BIN ?= $(BIN)/cnpg-teleport
e2e: world-tools
	@$(GO) test -c -vet=off -o $(BIN)/e2e.test ./test/e2e
	@$(WORLD_ENV) CNPG_TELEPORT_BIN=$(CNPG_TELEPORT_BIN) PROMRULES_BIN_DIR=$$($(TOOLS) promrules) \
	  TEST_TIMEOUT=$(TEST_TIMEOUT) hack/e2e.sh $(BIN)/e2e.test $(E2E_JOBS) '$(E2E_RUN)'

## fuzz: each fuzz target (annotations, labels, names, the pg_hba merge) for FUZZ_TIME; the corpus is in
## testdata/fuzz, and plain `go test` runs it every time. FUZZ_TIME is a count of executions, not a
## duration: Go 1.26's fuzz coordinator can fail a duration-bounded run at its deadline with a bare
## "context deadline exceeded" and no failing input (golang/go#75804, fixed in Go 1.27; seen in
## make test on FuzzParseAnnotations); a count has no deadline.
FUZZ_TIME ?= 20000x
FUZZ_TARGETS := ./dbspec:FuzzParseAnnotations ./dbspec:FuzzParseLabels ./dbspec:FuzzNames \
	./dbspec:FuzzDatabaseNameFits ./pgrules:FuzzMergeHBA
fuzz: deps
	@for t in $(FUZZ_TARGETS); do \
		echo "[fuzz] $${t#*:}"; \
		$(GO) test -vet=off -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZ_TIME) "$${t%%:*}" || exit 1; \
	done

## demo: the main job on one machine (world, controller, sample Cluster, tctl/tsh), pausing between steps.
demo: world-tools
	@$(WORLD_ENV) $(GO) run ./test/cmd/demo $$([ -t 0 ] && echo -pause)

## demo-verify: the same without pauses; exits non-zero if any step fails.
demo-verify: world-tools
	@$(WORLD_ENV) $(GO) run ./test/cmd/demo

## bench: measure the controller against the test world (about 11 min): latency, 1,000 Clusters at once,
## steady-state writes and reads next to the by-hand approach, deletion, memory; writes docs/bench.png and
## ends with a BENCH line. BENCH_FLAGS passes flags (go run ./test/cmd/bench -h).
BENCH_FLAGS ?=
bench: world-tools
	@$(WORLD_ENV) $(GO) run ./test/cmd/bench $(BENCH_FLAGS)

## race: the unit and envtest tests under the race detector. It needs cgo
## (gcc); only the test builds turn it on (this, and bin/cnpg-teleport-race that
## make test's end-to-end tests run): the shipped binaries stay CGO_ENABLED=0.
race: deps
	KUBE_APISERVER_DIR=$$($(TOOLS) kube-apiserver) ETCD_DIR=$$($(TOOLS) etcd) CGO_ENABLED=1 \
	  $(GO) test -vet=off -race -count=1 -timeout $(TEST_TIMEOUT) $(foreach d,$(subst |, ,$(RACE_DIRS)),./$(d)/...)

## unit: the unit and envtest tests (a real apiserver + etcd; no CNPG, no Teleport).
unit: deps
	KUBE_APISERVER_DIR=$$($(TOOLS) kube-apiserver) ETCD_DIR=$$($(TOOLS) etcd) $(GO) test -count=1 ./teleport/... ./controllers/... ./certs/... ./clusterspec/... ./dbspec/... ./pgrules/... ./cmd/...

clean:
	rm -rf $(BIN)
