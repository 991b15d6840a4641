#!/usr/bin/env bash
# test.sh is make test: the tools, then the tests that wait on real components,
# and beside them, at the lowest CPU priority, the checks that only need CPU.
#
#   hack/test.sh        (make test runs it; MAKE picks the make binary)
#
# In the foreground, one after the other: the Debian packages (make deps), the
# world's tools and bin/ (make world-tools: CPU-bound builds, cold), the unit
# and envtest tests under -race (make race), the race-built controller, the
# other packages (make rest: commands, chart, world), the end-to-end tests
# (make e2e). The end-to-end tests wait on apiservers, PostgreSQL and Teleport
# most of the time and keep the 2 cores ~40% busy. make race stays in the
# foreground: beside the end-to-end tests at nice 10, its envtest test of
# concurrent edits (TestEnvConcurrentEditsSurvive, a 30 s bound under a
# writer's load) timed out in a warm make test (2026-12-05).
#
# In the background, from the start, under SCHED_IDLE (chrt --idle: CPU no
# foreground process wants, not a share of it): go vet, golangci-lint (built on
# first use), the image builder's tests, the fuzz targets (make checks). Cold,
# they get the gaps of the tool builds (links, downloads).
#
# The background log (bin/test-checks.log) is printed when it ends. Every
# stage runs even when one before it failed (a CI run reports every failure,
# not the first); the script fails if any did.
set -uo pipefail

cd "$(dirname "$0")/.."
make=${MAKE:-make}
mkdir -p bin
t0=$SECONDS

stamp() { echo "[test] $* ($((SECONDS - t0))s)"; }

# Each stage's CPU (user + system seconds of every process it ran, bash's
# time) is printed after it: a cold run shows what it spends where.
failed=()
stage() { # stage NAME COMMAND...
	local name=$1 TIMEFORMAT="[test]   CPU %Us user + %Ss system, %Rs"
	shift
	stamp "$name"
	time "$@" || { failed+=("$name"); stamp "FAILED: $name"; }
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
stage "go test -race (unit, envtest)" "$make" --no-print-directory race
stage "bin/cnpg-teleport-race: the controller under the race detector, for the end-to-end tests" \
	"$make" --no-print-directory race-bin
stage "go test (the packages the -race stage did not run: commands, chart, world)" \
	"$make" --no-print-directory rest
stage "end-to-end (test/e2e; a race the controller reports in its log fails the test)" \
	"$make" --no-print-directory e2e CNPG_TELEPORT_BIN="$PWD/bin/cnpg-teleport-race"

for job in "checks:$checks:$checks_log:background checks (go vet, golangci-lint, image, fuzz)"; do
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
