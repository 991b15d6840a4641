package controllers

import (
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// warnings emits a Warning Event only when it differs from the last one
// reported for the same object (a Cluster, a Pooler) and reason, so a condition that persists
// across resyncs and retries (a name conflict, Teleport down) is reported
// once, not once per pass. A pass that succeeds clears the object's record.
type warnings struct {
	mu   sync.Mutex
	last map[k8stypes.UID]map[string]string // reason -> note
}

func (w *warnings) warn(rec events.EventRecorder, o client.Object, reason, action, format string, args ...any) {
	w.emit(rec, o, corev1.EventTypeWarning, reason, action, format, args...)
}

// note is warn for a Normal Event: a waiting state reported once.
func (w *warnings) note(rec events.EventRecorder, o client.Object, reason, action, format string, args ...any) {
	w.emit(rec, o, corev1.EventTypeNormal, reason, action, format, args...)
}

func (w *warnings) emit(rec events.EventRecorder, o client.Object, eventType, reason, action, format string, args ...any) {
	note := fmt.Sprintf(format, args...)
	w.mu.Lock()
	if w.last == nil {
		w.last = map[k8stypes.UID]map[string]string{}
	}
	if w.last[o.GetUID()] == nil {
		w.last[o.GetUID()] = map[string]string{}
	}
	same := w.last[o.GetUID()][reason] == note
	w.last[o.GetUID()][reason] = note
	w.mu.Unlock()
	if !same {
		rec.Eventf(o, nil, eventType, reason, action, "%s", note)
	}
}

func (w *warnings) clear(o client.Object) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.last, o.GetUID())
}
