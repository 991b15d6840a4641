package controllers

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	k8stypes "k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
)

// TestQueuePriorities: a resync goes after every event; a pass that waits,
// or a retry after an error, keeps the priority it had.
func TestQueuePriorities(t *testing.T) {
	r, _, _ := testReconciler(leastPrivilege())
	r.Resync, r.TrustPoll = time.Hour, 3*time.Second
	c := cluster("app", "pg", 2, map[string]string{dbspec.AnnotationRegister: "true"})
	result := func(res ctrl.Result, _ error) ctrl.Result { return res }
	for name, tt := range map[string]struct {
		got      ctrl.Result
		priority *int
		after    time.Duration
	}{
		"registered: the resync":         {result(r.outcome(nil)), new(handler.LowPriority), time.Hour},
		"name conflict: the resync":      {result(r.outcome(fmt.Errorf("x: %w", errConflict))), new(handler.LowPriority), time.Hour},
		"trust not ours: the resync":     {result(r.trustOutcome(c, errNotOurs)), new(handler.LowPriority), time.Hour},
		"trust switched, CNPG to report": {result(r.trustOutcome(c, nil)), nil, 3 * time.Second},
		"trust waits for cert-manager":   {result(r.trustOutcome(c, fmt.Errorf("certificate x: %w: not issued yet", errWaiting))), nil, issuePoll},
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
}

// TestReportedFirst: on controller-runtime's priority queue, a Cluster whose
// certificates CNPG has just reported is taken before Clusters queued
// earlier (new ones, at an event's 0), and those before a resync.
func TestReportedFirst(t *testing.T) {
	q := priorityqueue.New[reconcile.Request]("test")
	defer q.ShutDown()
	req := func(name string) reconcile.Request {
		return reconcile.Request{NamespacedName: k8stypes.NamespacedName{Namespace: "app", Name: name}}
	}
	q.AddWithOpts(priorityqueue.AddOpts{Priority: new(priorityResync)}, req("resynced"))
	q.Add(req("new-1"))
	q.Add(req("new-2"))
	old := cluster("app", "reported", 1, nil)
	reported := old.DeepCopy()
	reported.Status.Certificates.ClientCASecret = "reported-teleport-ca"
	if !certificatesReported(old, reported) {
		t.Fatal("certificatesReported: no")
	}
	reportedFirst().Update(context.Background(), event.UpdateEvent{ObjectOld: old, ObjectNew: reported}, q)
	var order []string
	for range 4 {
		r, priority, _ := q.GetWithPriority()
		order = append(order, fmt.Sprintf("%s:%d", r.Name, priority))
		q.Done(r)
	}
	want := fmt.Sprintf("[reported:%d new-1:0 new-2:0 resynced:%d]", priorityReported, priorityResync)
	if got := fmt.Sprint(order); got != want {
		t.Fatalf("taken %s, want %s", got, want)
	}
}
