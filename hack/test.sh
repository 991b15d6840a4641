#!/usr/bin/env bash
# test.sh is make test: the tools, then the tests that wait on real components,
# and beside them, at the lowest CPU priority, the checks that only need CPU.
#
#   hack/test.sh        (make test runs it; MAKE picks the make binary)
#
# In the foreground, one after the other: the Debian packages (make deps), the
# world's tools and bin/ (make world-tools: CPU-bound builds, cold), the
# race-built controller, the end-to-end tests (make e2e). They wait on
# apiservers, PostgreSQL and Teleport most of the time and keep the 2 cores
# ~40% busy.
#
# In the background, from the start, under SCHED_IDLE (chrt --idle: CPU no
# foreground process wants, not a share of it): go vet, golangci-lint (built on
# first use), the image builder's tests, the fuzz targets (make checks). Cold,
# they get the gaps of the tool builds (links, downloads) and finish beside the
# end-to-end tests instead of after them.
#
# Beside the end-to-end tests, at nice 10: the unit and envtest tests under
# -race (make race) and the other packages (make rest: commands, chart,
# world). They need only the tools and the race build the controller has just
# made, and take a few minutes the end-to-end tests leave idle.
#
# The background logs (bin/test-checks.log, bin/test-unit.log) are printed
# when they end. Every stage runs even when one before it failed (a CI run
# reports every failure, not the first); the script fails if any did.
set -uo pipefail

cd "$(dirname "$0")/.."
make=${MAKE:-make}
mkdir -p bin
t0=$SECONDS

stamp() { echo "[test] $* ($((SECONDS - t0))s)"; }

failed=()
stage() { # stage NAME COMMAND...
	local name=$1
	shift
	stamp "$name"
	"$@" || { failed+=("$name"); stamp "FAILED: $name"; }
}

# Each background job in its own process group (set -m), so that a stopped
# make test stops all of it.
bg=()
background() { # background LOG COMMAND...
	local log=$1
	shift
	set -m
	"$@" >"$log" 2>&1 &
	bg+=($!)
	set +m
}
trap 'for p in "${bg[@]}"; do kill -- -"$p" 2>/dev/null; done; exit 130' INT TERM

idle=(nice -n 19)
chrt --idle 0 true 2>/dev/null && idle=(chrt --idle 0)

stage "Debian packages (make deps)" "$make" --no-print-directory deps

checks_log=bin/test-checks.log
stamp "background, ${idle[*]}: go vet, golangci-lint, image (hack/image), fuzz -> $checks_log"
background "$checks_log" "${idle[@]}" "$make" --no-print-directory checks
checks=${bg[-1]}

stage "the world's tools and bin/ (make world-tools)" "$make" --no-print-directory world-tools
stage "bin/cnpg-teleport-race: the controller under the race detector, for the end-to-end tests" \
	"$make" --no-print-directory race-bin

unit_log=bin/test-unit.log
stamp "background, nice 10: go test -race (unit, envtest), then the other packages (commands, chart, world) -> $unit_log"
background "$unit_log" nice -n 10 bash -c '
	rc=0
	echo "[unit] go test -race (unit, envtest)"; "$1" --no-print-directory race || rc=1
	echo "[unit] go test (the packages the -race stage does not run: commands, chart, world)"
	"$1" --no-print-directory rest || rc=1
	exit $rc' unit "$make"
unit=${bg[-1]}

stage "end-to-end (test/e2e; a race the controller reports in its log fails the test)" \
	"$make" --no-print-directory e2e CNPG_TELEPORT_BIN="$PWD/bin/cnpg-teleport-race"

for job in "unit:$unit:$unit_log:unit and envtest tests (-race), other packages" \
	"checks:$checks:$checks_log:background checks (go vet, golangci-lint, image, fuzz)"; do
	IFS=: read -r name pid log what <<<"$job"
	stamp "waiting for the $name job"
	rc=0
	wait "$pid" || rc=$?
	echo "----- $log"
	cat "$log"
	echo "----- end of $log"
	[ $rc = 0 ] || { failed+=("$what"); stamp "FAILED: $what"; }
done

if [ ${#failed[@]} -gt 0 ]; then
	stamp "FAIL: $(printf '%s; ' "${failed[@]}")"
	exit 1
fi
stamp "ok"
