package controllers

import (
	"errors"
	"fmt"
	"testing"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/handler"
)

// TestQueuePriorities: a Cluster whose trust step waits goes before a new
// Cluster (events come in at 0), a resync after both; a retry after an
// error keeps the priority it had.
func TestQueuePriorities(t *testing.T) {
	r, _, _ := testReconciler(leastPrivilege())
	r.Resync, r.TrustPoll = time.Hour, 3*time.Second
	c := cluster("app", "pg", 2, map[string]string{AnnotationRegister: "true"})
	result := func(res ctrl.Result, _ error) ctrl.Result { return res }
	for name, tt := range map[string]struct {
		got      ctrl.Result
		priority *int
		after    time.Duration
	}{
		"registered: the resync":         {result(r.outcome(nil)), new(handler.LowPriority), time.Hour},
		"name conflict: the resync":      {result(r.outcome(fmt.Errorf("x: %w", errConflict))), new(handler.LowPriority), time.Hour},
		"trust switched, CNPG to report": {result(r.trustOutcome(c, nil)), new(1), 3 * time.Second},
		"trust waits for cert-manager":   {result(r.trustOutcome(c, fmt.Errorf("certificate x: %w: not issued yet", errWaiting))), new(1), issuePoll},
		"trust not ours: the resync":     {result(r.trustOutcome(c, errNotOurs)), new(handler.LowPriority), time.Hour},
		"failed: retried as it was":      {result(r.outcome(errors.New("teleport: connection refused"))), nil, 0},
	} {
		t.Run(name, func(t *testing.T) {
			if tt.got.RequeueAfter != tt.after {
				t.Fatalf("requeue after %s, want %s", tt.got.RequeueAfter, tt.after)
			}
			switch {
			case tt.priority == nil && tt.got.Priority != nil:
				t.Fatalf("priority %d, want the request's own", *tt.got.Priority)
			case tt.priority != nil && (tt.got.Priority == nil || *tt.got.Priority != *tt.priority):
				t.Fatalf("priority %v, want %d", tt.got.Priority, *tt.priority)
			}
		})
	}
	if priorityStarted <= 0 || priorityResync >= 0 {
		t.Fatalf("started %d, resync %d: want started above an event's 0, resync below", priorityStarted, priorityResync)
	}
}
