package e2e

import (
	"context"
	"os"
	"testing"
	"time"

	perf "github.com/cnpg-teleport/cnpg-teleport/test/bench"
)

// TestTeleportOutage (issue 21): 30 Clusters registered; Teleport (auth,
// proxy, agent) stopped for 60 s while 20 of them are deleted and 50 new
// ones created; started again on the same data. Everything converges: the
// 10 survivors and the 50 new ones registered, the 20 deleted gone from
// Teleport and from Kubernetes, no orphan, nothing created twice (Teleport's
// audit log), and no bundle touched while Teleport was down. It prints the
// time to converge once Teleport is back and the Events of the outage. The
// apiserver and Teleport are real, CNPG's status is played (test/bench).
func TestTeleportOutage(t *testing.T) {
	cfg := perf.OutageConfig{Dir: raceChecked(t), Before: 30, Deleted: 20, Created: 50, Down: time.Minute, Resync: 30 * time.Second}
	if testing.Verbose() {
		cfg.Log = os.Stderr
	}
	res, err := perf.Outage(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Teleport back -> converged in %s; Events while it was down: %v", res.Converge.Round(100*time.Millisecond), res.During)
	if len(res.Extra) > 0 || len(res.Missing) > 0 {
		t.Errorf("orphans %v, missing %v", res.Extra, res.Missing)
	}
	if want := 2 * (cfg.Before + cfg.Created); res.Creates != want {
		t.Errorf("%d db creates in Teleport's audit log, want %d: each db resource once", res.Creates, want)
	}
	if want := 2 * cfg.Deleted; res.Deletes != want {
		t.Errorf("%d db deletes in Teleport's audit log, want %d", res.Deletes, want)
	}
	if res.BundlesKept != res.Survivors {
		t.Errorf("%d of %d bundles changed while Teleport was down", res.Survivors-res.BundlesKept, res.Survivors)
	}
	if res.During["Warning/TeleportUnavailable"] == 0 {
		t.Errorf("no TeleportUnavailable Warning while Teleport was down: %v", res.During)
	}
}
