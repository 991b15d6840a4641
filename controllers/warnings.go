package controllers

import (
	"fmt"
	"sync"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	corev1 "k8s.io/api/core/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
)

// warnings emits a Warning Event only when it differs from the last one
// reported for the same Cluster and reason, so a condition that persists
// across resyncs and retries (a name conflict, Teleport down) is reported
// once, not once per pass. A pass that succeeds clears the Cluster's record.
type warnings struct {
	mu   sync.Mutex
	last map[k8stypes.UID]map[string]string // reason -> note
}

func (w *warnings) warn(rec events.EventRecorder, c *cnpgv1.Cluster, reason, action, format string, args ...any) {
	w.emit(rec, c, corev1.EventTypeWarning, reason, action, format, args...)
}

// note is warn for a Normal Event: a waiting state reported once.
func (w *warnings) note(rec events.EventRecorder, c *cnpgv1.Cluster, reason, action, format string, args ...any) {
	w.emit(rec, c, corev1.EventTypeNormal, reason, action, format, args...)
}

func (w *warnings) emit(rec events.EventRecorder, c *cnpgv1.Cluster, eventType, reason, action, format string, args ...any) {
	note := fmt.Sprintf(format, args...)
	w.mu.Lock()
	if w.last == nil {
		w.last = map[k8stypes.UID]map[string]string{}
	}
	if w.last[c.UID] == nil {
		w.last[c.UID] = map[string]string{}
	}
	same := w.last[c.UID][reason] == note
	w.last[c.UID][reason] = note
	w.mu.Unlock()
	if !same {
		rec.Eventf(c, nil, eventType, reason, action, "%s", note)
	}
}

func (w *warnings) clear(c *cnpgv1.Cluster) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.last, c.UID)
}
