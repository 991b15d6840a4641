package teleport

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/go-logr/logr"
)

// secretVolume lays out dir as the kubelet does a Secret volume (its atomic
// writer): the data in a timestamped directory, "..data" a symlink to it, and
// each key a symlink through "..data". update swaps "..data" to a new
// directory in one rename and removes the old one, as a renewal arrives.
type secretVolume struct {
	dir string
	gen int
}

func (v *secretVolume) update(t *testing.T, identity string) {
	t.Helper()
	v.gen++
	data := filepath.Join(v.dir, fmt.Sprintf("..2026_12_01_00_00_%02d", v.gen))
	if err := os.Mkdir(data, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "identity"), []byte(identity), 0o600); err != nil {
		t.Fatal(err)
	}
	old, _ := os.Readlink(filepath.Join(v.dir, "..data"))
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(data), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(v.dir, old)); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err := os.Symlink(filepath.Join("..data", "identity"), filepath.Join(v.dir, "identity")); err != nil {
		t.Fatal(err)
	}
}

// TestWatcherFollowsAMountedSecret: the chart mounts tbot's Secret as a
// directory and passes <mount>/identity; a renewal swaps the "..data"
// symlink, never rewrites the file in place. The watcher reloads once per
// swap.
func TestWatcherFollowsAMountedSecret(t *testing.T) {
	v := &secretVolume{dir: t.TempDir()}
	v.update(t, "v1")
	path := filepath.Join(v.dir, "identity")
	fp, err := fingerprintFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var reloads, checks atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	wt := watcher{path: path, interval: tick, log: logr.Discard(),
		reload: func() error { reloads.Add(1); return nil }, checked: func() { checks.Add(1) }}
	go func() { defer close(done); wt.run(ctx, fp) }()
	t.Cleanup(func() { cancel(); <-done })
	settle := func() {
		start := checks.Load()
		waitFor(t, "5 more checks", func() bool { return checks.Load() >= start+5 })
	}
	var swaps int32
	for _, content := range []string{"v2 (renewed by tbot)", "v3"} {
		v.update(t, content)
		swaps++
		waitFor(t, "a reload after the swap", func() bool { return reloads.Load() >= swaps })
		settle()
		if n := reloads.Load(); n != swaps {
			t.Fatalf("%d reloads after %d swaps", n, swaps)
		}
	}
}
