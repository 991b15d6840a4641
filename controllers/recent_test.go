package controllers

import (
	"testing"
	"time"

	"github.com/gravitational/teleport/api/types"
)

// TestRecentWritesPruned: what no read lag concerns is dropped by the reads
// too, not only by the next write: a burst of writes is not held while
// nothing is written after it.
func TestRecentWritesPruned(t *testing.T) {
	var w recentWrites
	t0 := time.Unix(1000, 0)
	for _, name := range []string{"a", "b", "c"} {
		db, err := types.NewDatabaseV3(types.Metadata{Name: name}, types.DatabaseSpecV3{Protocol: "postgres", URI: name + ":5432"})
		if err != nil {
			t.Fatal(err)
		}
		w.wrote(db, t0)
	}
	if !w.within("a", t0.Add(time.Second), readLag) {
		t.Fatal("a write within the lag not remembered")
	}
	if w.within("a", t0.Add(readLag+time.Second), readLag) {
		t.Fatal("a write past the lag still counts")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.m) != 0 {
		t.Fatalf("%d writes held past the lag after a read", len(w.m))
	}
}
