package teleport

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
)

const tick = 5 * time.Millisecond

// watchedFile runs a watcher on a fresh file holding "v1" with reload
// counting its calls and failing while fail is set; stop ends the watcher
// and waits for it.
type watchedFile struct {
	path    string
	reloads atomic.Int32 // calls
	loaded  atomic.Int32 // successful calls
	fail    atomic.Bool
	checks  atomic.Int32 // checks the watcher completed
	stop    func()

	mu   sync.Mutex
	logs []string
}

func watch(t *testing.T) *watchedFile {
	t.Helper()
	w := &watchedFile{path: filepath.Join(t.TempDir(), "identity")}
	w.write(t, "v1")
	fp, err := fingerprintFile(w.path)
	if err != nil {
		t.Fatal(err)
	}
	log := funcr.New(func(prefix, args string) {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.logs = append(w.logs, args)
	}, funcr.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	wt := watcher{path: w.path, interval: tick, log: log, reload: func() error {
		w.reloads.Add(1)
		if w.fail.Load() {
			return errors.New("half-written identity")
		}
		w.loaded.Add(1)
		return nil
	}, checked: func() { w.checks.Add(1) }}
	go func() {
		defer close(done)
		wt.run(ctx, fp)
	}()
	w.stop = func() { cancel(); <-done }
	t.Cleanup(w.stop)
	return w
}

// write replaces the file in one step, so the watcher never sees it half
// written: that case is TestWatcherRetriesAFailedReload's.
func (w *watchedFile) write(t *testing.T, content string) {
	t.Helper()
	tmp := w.path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, w.path); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(tick)
	}
}

// settle waits until the watcher has completed several more checks, each
// a chance to reload wrongly.
func (w *watchedFile) settle(t *testing.T) {
	t.Helper()
	start := w.checks.Load()
	waitFor(t, "5 more checks", func() bool { return w.checks.Load() >= start+5 })
}

func (w *watchedFile) logged(substr string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, l := range w.logs {
		if strings.Contains(l, substr) {
			return true
		}
	}
	return false
}

func TestWatcherReloadsOncePerChange(t *testing.T) {
	w := watch(t)
	w.settle(t)
	if n := w.reloads.Load(); n != 0 {
		t.Fatalf("%d reloads without a change", n)
	}
	w.write(t, "v2 (renewed by tbot)")
	waitFor(t, "a reload", func() bool { return w.reloads.Load() >= 1 })
	w.settle(t)
	if n := w.reloads.Load(); n != 1 {
		t.Fatalf("%d reloads for one change, want 1", n)
	}
	if !w.logged("Reloaded the Teleport identity") {
		t.Errorf("reload not logged: %v", w.logs)
	}
	w.write(t, "v3")
	waitFor(t, "a second reload", func() bool { return w.reloads.Load() >= 2 })
	w.settle(t)
	if n := w.reloads.Load(); n != 2 {
		t.Fatalf("%d reloads for two changes, want 2", n)
	}
}

func TestWatcherRetriesAFailedReload(t *testing.T) {
	w := watch(t)
	w.fail.Store(true)
	w.write(t, "v2, half written")
	waitFor(t, "retries", func() bool { return w.reloads.Load() >= 3 })
	if !w.logged("Cannot reload the Teleport identity") {
		t.Errorf("failure not logged: %v", w.logs)
	}
	w.fail.Store(false)
	waitFor(t, "a successful reload", func() bool { return w.loaded.Load() == 1 })
	n := w.reloads.Load()
	w.settle(t)
	if m, l := w.reloads.Load(), w.loaded.Load(); m != n || l != 1 {
		t.Fatalf("kept reloading after success: %d more calls, %d successes", m-n, l)
	}
}

func TestWatcherSurvivesAMissingFile(t *testing.T) {
	w := watch(t)
	if err := os.Remove(w.path); err != nil {
		t.Fatal(err)
	}
	w.settle(t)
	if n := w.reloads.Load(); n != 0 {
		t.Fatalf("%d reloads of a missing file", n)
	}
	if !w.logged("Cannot read the Teleport identity file") {
		t.Errorf("missing file not logged: %v", w.logs)
	}
	w.write(t, "v2")
	waitFor(t, "a reload", func() bool { return w.reloads.Load() == 1 })
}

func TestWatcherStopsWithItsContext(t *testing.T) {
	w := watch(t)
	w.stop() // returns only once run has returned: nothing can reload after it
	w.write(t, "v2")
	if n := w.reloads.Load(); n != 0 {
		t.Fatalf("%d reloads after stop", n)
	}
}

func TestFingerprint(t *testing.T) {
	p := filepath.Join(t.TempDir(), "identity")
	if err := os.WriteFile(p, []byte("aaaa"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := fingerprintFile(p); err != nil {
		t.Fatal(err)
	}
	var a fingerprint
	// Same size, same mtime: only the content hash can tell.
	mtime := time.Unix(1_700_000_000, 0)
	for _, content := range []string{"aaaa", "bbbb"} {
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		if content == "aaaa" {
			a, _ = fingerprintFile(p)
		}
	}
	b, _ := fingerprintFile(p)
	if a == b {
		t.Fatal("different content, same fingerprint")
	}
	if _, err := fingerprintFile(p + ".missing"); err == nil {
		t.Fatal("no error for a missing file")
	}
}
