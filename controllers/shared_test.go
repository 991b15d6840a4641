package controllers

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/gravitational/teleport/api/types"
)

// TestSharedReads: the reads that are the same for every Cluster are made
// once per sharedReadTTL however many Clusters ask, concurrently or not; a
// caller's copy is its own; an error is not kept.
func TestSharedReads(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	var s shared[[]byte]
	calls := 0
	var mu sync.Mutex
	read := func() ([][]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		out := make([][]byte, 1, 4) // room to append: a shared array would show
		out[0] = []byte("ca")
		return out, nil
	}
	var wg sync.WaitGroup
	for range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := s.get(now, sharedReadTTL, read)
			if err != nil || len(got) != 1 {
				t.Errorf("get: %v %v", got, err)
				return
			}
			_ = append(got, []byte("prev")) // a caller's append (ensureBundle's) must not reach the others
		}()
	}
	wg.Wait()
	if calls != 1 {
		t.Fatalf("1,000 Clusters within the TTL made %d calls, want 1", calls)
	}
	if got, _ := s.get(now.Add(sharedReadTTL-time.Millisecond), sharedReadTTL, read); calls != 1 || len(got) != 1 {
		t.Fatalf("within the TTL: %d calls, value %q", calls, got)
	}
	a, _ := s.get(now, sharedReadTTL, read)
	a = append(a, []byte("mine"))
	b, _ := s.get(now, sharedReadTTL, read)
	_ = append(b, []byte("theirs"))
	if string(a[1]) != "mine" {
		t.Fatalf("another caller's append changed this one's copy: %q", a)
	}
	if _, err := s.get(now.Add(sharedReadTTL), sharedReadTTL, read); err != nil || calls != 2 {
		t.Fatalf("after the TTL: %d calls (%v), want a new read", calls, err)
	}
	// An error is returned, not kept: the next pass reads again.
	later := now.Add(time.Minute)
	if _, err := s.get(later, sharedReadTTL, func() ([][]byte, error) { return nil, errors.New("down") }); err == nil {
		t.Fatal("error swallowed")
	}
	if got, err := s.get(later, sharedReadTTL, read); err != nil || calls != 3 || len(got) != 1 {
		t.Fatalf("after an error: %q %v, %d calls", got, err, calls)
	}
	// A clock that went back does not serve a value from the future.
	if _, err := s.get(now.Add(-time.Hour), sharedReadTTL, read); err != nil || calls != 4 {
		t.Fatalf("clock back: %d calls (%v)", calls, err)
	}
}

// TestApplySharesTeleportReads: passes of many Clusters within the TTL
// read Teleport's CA and roles once.
func TestApplySharesTeleportReads(t *testing.T) {
	f := leastPrivilege()
	f.SetCACerts(types.DatabaseCA, [][]byte{testCA(t, "teleport-db")})
	r, _, now := testReconciler(f)
	ctx := context.Background()
	for range 50 {
		if _, err := r.databaseClientCAs(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := r.teleportRoles(ctx); err != nil {
			t.Fatal(err)
		}
	}
	*now = now.Add(sharedReadTTL)
	if _, err := r.databaseClientCAs(ctx); err != nil {
		t.Fatal(err)
	}
	got := callsSince(f, 0)
	if got["DatabaseClientCAs"] != 2 || got["ListRoles"] != 1 {
		t.Fatalf("calls %v, want DatabaseClientCAs 2, ListRoles 1", got)
	}
	// A short resync shortens the sharing: a rotation reaches the bundle
	// within the resync period and a quarter of it.
	r.Resync = 2 * time.Second
	*now = now.Add(r.Resync / 4)
	if _, err := r.databaseClientCAs(ctx); err != nil {
		t.Fatal(err)
	}
	if got := callsSince(f, 0); got["DatabaseClientCAs"] != 3 {
		t.Fatalf("a quarter of a 2 s resync later: %d CA reads, want a new one", got["DatabaseClientCAs"])
	}
}
