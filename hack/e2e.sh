#!/usr/bin/env bash
# e2e.sh runs the end-to-end tests (test/e2e) from their compiled test binary,
# JOBS test processes side by side, one test per process, longest first.
#
#   hack/e2e.sh BINARY [JOBS [REGEXP]]
#
# JOBS defaults to 1 (make test's setting, see below); REGEXP picks tests by name.
#
# Each test starts its own world (apiserver, etcd, CNPG, cert-manager, Teleport)
# on fixed ports; world.Main puts every test process in its own user, mount and
# network namespace, so two worlds never meet. On 2 cores two at a time took 967 s
# where one at a time takes ~1,300 s (2026-12-05), but each test ran ~1.5 times
# slower, and TestIssuerMode's replica then still served its old server
# certificate a minute after the switch: make test runs one at a time.
#
# A test's output is printed when it ends (under a lock, so two never
# interleave); the script fails if any test failed, after all have run.
set -euo pipefail

bin=$(realpath "$1")
jobs=${2:-1}
run=${3:-^Test}
root=$(cd "$(dirname "$0")/.." && pwd)
timeout=${TEST_TIMEOUT:-30m}

# Longest first (as measured two at a time on 2026-12-05), so that with JOBS > 1
# the last test to start is a short one; tests not listed run after these.
order=(
	TestGitOpsReapply TestRegistration TestTrust TestChartInstall TestSharedTeleport TestAutoUsers
	TestTeleportOutage TestIssuerMode TestPoolers TestIdentityExpiry TestAgentServing TestWalkthrough
	TestLeaderHandover TestBenchCounts TestFoundation TestNamespaceDeletion TestTeleportConnect
	TestListBeyondGRPCDefault TestDatabaseServersPaged TestWalkthroughCommands
)

if [ "${E2E_ONE:-}" = 1 ]; then
	# One test: run it, then print its output and a summary line under the lock.
	name=$4
	out=$(mktemp)
	t0=$SECONDS
	rc=0
	(cd "$root/test/e2e" && "$bin" -test.run "^${name}\$" -test.count=1 -test.timeout "$timeout") >"$out" 2>&1 || rc=$?
	{
		flock 9
		cat "$out"
		if [ $rc = 0 ]; then
			echo "--- e2e ok   $name ($((SECONDS - t0))s)"
		else
			echo "--- e2e FAIL $name ($((SECONDS - t0))s, exit $rc)"
		fi
	} 9>>"$root/bin/.e2e.lock"
	rm -f "$out"
	exit $rc
fi

mapfile -t all < <(cd "$root/test/e2e" && "$bin" -test.list "$run")
[ ${#all[@]} -gt 0 ] || { echo "e2e: $bin lists no tests" >&2; exit 1; }
queue=()
for n in "${order[@]}"; do
	printf '%s\n' "${all[@]}" | grep -qx "$n" && queue+=("$n")
done
for n in "${all[@]}"; do
	printf '%s\n' "${order[@]}" | grep -qx "$n" || queue+=("$n")
done

mkdir -p "$root/bin"
echo "[e2e] ${#queue[@]} tests, $jobs at a time"
t0=$SECONDS
rc=0
printf '%s\n' "${queue[@]}" | E2E_ONE=1 xargs -P "$jobs" -I{} "$0" "$bin" "$jobs" "$run" {} || rc=$?
if [ $rc = 0 ]; then
	echo "ok  	e2e (${#queue[@]} tests)	$((SECONDS - t0))s"
else
	echo "FAIL	e2e	$((SECONDS - t0))s"
	exit 1
fi
