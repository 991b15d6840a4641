package e2e

import (
	"context"
	"os"
	"testing"
	"time"

	perf "github.com/cnpg-teleport/cnpg-teleport/test/bench"
)

// TestLeaderHandover (issue 21): two replicas with leader election; 100
// Clusters registered, then deleted at once; the leader SIGKILLed once 30
// are deregistered. The other replica takes the Lease and finishes: every db
// resource deregistered, every Cluster gone (no finalizer left), each db
// deleted once (Teleport's audit log). It prints the hand-over time (the
// Lease's 15 s, as the killed leader never gives it up). The apiserver and
// Teleport are real, CNPG's status is played (test/bench).
func TestLeaderHandover(t *testing.T) {
	cfg := perf.HandoverConfig{Dir: raceChecked(t), Clusters: 100, KillAfter: 30, Resync: 30 * time.Second}
	if testing.Verbose() {
		cfg.Log = os.Stderr
	}
	res, err := perf.Handover(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("SIGKILL -> the other replica leads in %s; all deregistered and gone %s after the kill",
		res.Handover.Round(100*time.Millisecond), res.Finish.Round(100*time.Millisecond))
	if want := 2 * cfg.Clusters; res.Deletes != want {
		t.Errorf("%d db deletes in Teleport's audit log, want %d: each once", res.Deletes, want)
	}
	if res.Orphans != 0 {
		t.Errorf("%d db resources left to orphan collection: a finalizer let go before its db resources were deleted", res.Orphans)
	}
}
