package e2e

import (
	"context"
	"testing"
	"time"

	perf "github.com/cnpg-teleport/cnpg-teleport/test/bench"
)

// TestBenchCounts runs make bench's code small (the real apiserver, the real
// Teleport, the controller's binary) and checks what it counts, never a
// time: no write when nothing changed, Teleport reads per Cluster pass that
// do not grow with the db resources Teleport holds, the shared reads shared,
// and the by-hand approach's writes on every sync.
func TestBenchCounts(t *testing.T) {
	cfg := perf.Config{
		Dir: raceChecked(t), Sequential: 3, AtOnce: 30, Foreign: []int{20, 400}, Secrets: 50,
		Resyncs: 2, Resync: 3 * time.Second,
	}
	res, err := perf.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Register) != cfg.Sequential || len(res.Delete) != cfg.Sequential {
		t.Fatalf("%d registrations and %d deletions timed, want %d each", len(res.Register), len(res.Delete), cfg.Sequential)
	}
	if n := res.ConvergeCalls["CreateDatabase"]; n != 2*cfg.AtOnce {
		t.Errorf("%d Clusters at once: %d creates, want %d (rw and ro each, once)", cfg.AtOnce, n, 2*cfg.AtOnce)
	}
	for _, s := range res.Steady {
		t.Logf("%d foreign db resources: %d passes (%.1f resyncs), Teleport calls %v, Kubernetes writes %v", s.Foreign, s.Passes, s.Resyncs, s.Calls, s.KubeWrites)
		if s.TeleportWrites != 0 || s.AuditWrites != 0 || len(s.KubeWrites) != 0 {
			t.Errorf("%d foreign: idle resyncs wrote: Teleport %d (its audit log %d), Kubernetes %v", s.Foreign, s.TeleportWrites, s.AuditWrites, s.KubeWrites)
		}
		// Each pass reads its Cluster's two names (a pass that stops early
		// reads none), and no list but the orphan collector's, once per resync.
		// Reads and finished passes are counted at the same instant: the passes
		// still running then (at most the controller's 4 workers) have read
		// and are not counted yet (a run saw 139 reads in 69 passes).
		const running = 4
		if n := s.Calls["GetDatabase"]; n > 2*(s.Passes+running) || float64(n) < 1.9*float64(s.Passes) {
			t.Errorf("%d foreign: %d reads by name in %d passes, want 2 a pass", s.Foreign, n, s.Passes)
		}
		if s.Calls["ListDatabases"] > cfg.Resyncs+1 {
			t.Errorf("%d foreign: %d lists in %d resyncs", s.Foreign, s.Calls["ListDatabases"], cfg.Resyncs)
		}
		if shared := s.Calls["DatabaseClientCAs"] + s.Calls["ListRoles"]; shared*4 > s.Passes {
			t.Errorf("%d foreign: %d CA and role reads in %d passes: not shared across Clusters", s.Foreign, shared, s.Passes)
		}
		// The agent check lists on its own clock, for every Cluster at once.
		if n := s.Calls["DatabaseServers"]; n*4 > s.Passes {
			t.Errorf("%d foreign: %d db_server lists in %d passes: not one for all Clusters", s.Foreign, n, s.Passes)
		}
	}
	if want := cfg.Resyncs * 2 * cfg.AtOnce; res.ByHandWrites != want {
		t.Errorf("by hand: %d Teleport writes, want %d (every db on every sync)", res.ByHandWrites, want)
	}
	if res.RSSPeak <= 0 || len(res.Curve) == 0 {
		t.Errorf("no memory (%v) or convergence curve (%d points) measured", res.RSSPeak, len(res.Curve))
	}
}
