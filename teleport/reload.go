package teleport

import (
	"context"
	"crypto/sha256"
	"os"
	"time"

	"github.com/go-logr/logr"
	"github.com/gravitational/trace"
)

// watcher reloads the identity when its file changes. tbot renews the
// controller's certificates (they live about an hour) by rewriting the file;
// without a reload the controller would lose Teleport when they expire.
// Polling, not inotify: tbot may replace the file or the directory (a mounted
// Secret is swapped through a symlink), which polling sees the same way.
type watcher struct {
	path     string
	interval time.Duration
	reload   func() error // injectable for tests; the credentials' Reload in New
	log      logr.Logger
	checked  func() // called after each check, when set: what tests wait on
}

// fingerprint identifies one version of the identity file. The content hash
// decides; mtime and size make a touched file count too, which costs one
// harmless reload.
type fingerprint struct {
	modTime int64 // UnixNano
	size    int64
	sum     [sha256.Size]byte
}

func fingerprintFile(path string) (fingerprint, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fingerprint{}, trace.ConvertSystemError(err)
	}
	b, err := os.ReadFile(path) //nolint:gosec // the configured identity file
	if err != nil {
		return fingerprint{}, trace.ConvertSystemError(err)
	}
	return fingerprint{modTime: fi.ModTime().UnixNano(), size: fi.Size(), sum: sha256.Sum256(b)}, nil
}

// run checks the file every interval until ctx ends, and calls reload when it
// differs from last. A failed reload (a half-written file, a missing file
// while tbot swaps it) keeps the old fingerprint, so the next tick retries.
// The fingerprint is taken before reloading: if the file was still being
// written, the reload read a version at least as new, and a later one
// differs from the fingerprint and is loaded on the next tick.
func (w watcher) run(ctx context.Context, last fingerprint) {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w.check(&last)
		if w.checked != nil {
			w.checked()
		}
	}
}

// check compares the file with last once, and reloads when it changed.
func (w watcher) check(last *fingerprint) {
	fp, err := fingerprintFile(w.path)
	if err != nil {
		w.log.Error(err, "Cannot read the Teleport identity file; keeping the loaded identity", "path", w.path)
		return
	}
	if fp == *last {
		return
	}
	if err := w.reload(); err != nil {
		w.log.Error(err, "Cannot reload the Teleport identity; keeping the loaded identity, will retry", "path", w.path)
		return
	}
	*last = fp
	w.log.Info("Reloaded the Teleport identity", "path", w.path)
}
