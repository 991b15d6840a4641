package controllers

import (
	"fmt"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
)

// warnings emits an Event only when it has not reported the same note for
// the same object (a Cluster, a Pooler) and reason since the object's
// record was last cleared, so a condition that persists across resyncs and
// retries (a name conflict on rw and another on ro, Teleport down) is
// reported once each, not once per pass. A pass that succeeds clears the
// object's record. At most maxNotes notes are kept per object and reason.
type warnings struct {
	mu   sync.Mutex
	last map[k8stypes.UID]map[string][]string // reason -> notes reported, oldest first
}

const maxNotes = 16

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
		w.last = map[k8stypes.UID]map[string][]string{}
	}
	if w.last[o.GetUID()] == nil {
		w.last[o.GetUID()] = map[string][]string{}
	}
	seen := w.last[o.GetUID()][reason]
	same := slices.Contains(seen, note)
	if !same {
		if len(seen) >= maxNotes {
			seen = seen[1:]
		}
		w.last[o.GetUID()][reason] = append(seen, note)
	}
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

// noteLimit is the Events API's limit on a note (events.k8s.io/v1): the
// apiserver refuses a longer one and the Event is lost (a 200 KiB invalid
// annotation quoted in its InvalidAnnotation Warning was).
const noteLimit = 1024

// fitNotes records every Event with its note cut to noteLimit.
type fitNotes struct{ events.EventRecorder }

func (f fitNotes) Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any) {
	f.EventRecorder.Eventf(regarding, related, eventtype, reason, action, "%s", fitNote(fmt.Sprintf(note, args...)))
}

// fitNote cuts s to noteLimit bytes, on a character boundary, saying so.
func fitNote(s string) string {
	if len(s) <= noteLimit {
		return s
	}
	const more = " … (cut to the Events API's 1 KiB; the log has it whole)"
	return dbspec.Truncate(s, noteLimit-len(more)) + more
}
