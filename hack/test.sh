#!/usr/bin/env bash
# test.sh is make test after the tools are built: the tests that wait on real
# components, one after the other, and beside them, at the lowest CPU priority,
# the checks that only need CPU.
#
#   hack/test.sh        (make test runs it; MAKE picks the make binary)
#
# In the foreground: the unit and envtest tests under -race (make race), the
# race-built controller, the other packages (commands, chart, world), the
# end-to-end tests (make e2e). They wait on apiservers, PostgreSQL and Teleport
# most of the time: the end-to-end tests, two thirds of it, keep the 2 cores
# ~40% busy. In the background, under nice 19 so that they take only what the
# tests leave: go vet, golangci-lint (built on first use), the image builder's
# tests, the fuzz targets (make checks). Its output goes to bin/test-checks.log
# and is printed when it ends.
#
# Every stage runs even when one before it failed (a CI run reports every
# failure, not the first); the script fails if any did.
set -uo pipefail

cd "$(dirname "$0")/.."
make=${MAKE:-make}
mkdir -p bin
log=bin/test-checks.log
t0=$SECONDS

stamp() { echo "[test] $* ($((SECONDS - t0))s)"; }

stamp "background, nice 19: go vet, golangci-lint, image (hack/image), fuzz -> $log"
# Its own process group (set -m), so that a stopped make test stops all of it.
set -m
nice -n 19 "$make" --no-print-directory checks >"$log" 2>&1 &
checks=$!
set +m
trap 'kill -- -$checks 2>/dev/null; exit 130' INT TERM

failed=()
stage() { # stage NAME COMMAND...
	local name=$1
	shift
	stamp "$name"
	"$@" || { failed+=("$name"); stamp "FAILED: $name"; }
}

stage "go test -race (unit, envtest)" "$make" --no-print-directory race
stage "bin/cnpg-teleport-race: the controller under the race detector, for the end-to-end tests" \
	"$make" --no-print-directory race-bin
stage "go test (the packages the -race stage did not run: commands, chart, world)" \
	"$make" --no-print-directory rest
stage "end-to-end (test/e2e; a race the controller reports in its log fails the test)" \
	"$make" --no-print-directory e2e CNPG_TELEPORT_BIN="$PWD/bin/cnpg-teleport-race"

stamp "waiting for the background checks"
rc=0
wait "$checks" || rc=$?
echo "----- $log"
cat "$log"
echo "----- end of $log"
[ $rc = 0 ] || failed+=("background checks (go vet, golangci-lint, image, fuzz)")

if [ ${#failed[@]} -gt 0 ]; then
	stamp "FAIL: $(printf '%s; ' "${failed[@]}")"
	exit 1
fi
stamp "ok"
