package controllers

import (
	"errors"
	"testing"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
)

// TestNotWhileStarting: the trust switch waits while fewer instances are
// ready than exist (PVC groups, at most spec.instances), with a TrustPending
// Event; a Cluster with no instance yet, or a PVC group left over from a
// scale-down, does not hold it back.
func TestNotWhileStarting(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		spec, instances, ready int
		wait                   bool
	}{
		{"no instance yet (initdb)", 2, 0, 0, false},
		{"all ready", 2, 2, 2, false},
		{"a replica starting", 2, 2, 1, true},
		{"the primary starting", 1, 1, 0, true},
		{"scaling up: the new instance starts", 3, 3, 2, true},
		{"scaling up: the new instance not created yet", 3, 2, 2, false},
		{"a PVC group left over from a scale-down", 2, 3, 2, false},
	} {
		r, rec, _ := testReconciler(nil)
		c := &cnpgv1.Cluster{Spec: cnpgv1.ClusterSpec{Instances: tc.spec}}
		c.Name, c.Namespace, c.UID = "pg", "ns", "u1"
		c.Status.Instances, c.Status.ReadyInstances = tc.instances, tc.ready
		err := r.notWhileStarting(c)
		if got := errors.Is(err, errWaiting); got != tc.wait {
			t.Errorf("%s: waits %v (%v), want %v", tc.name, got, err, tc.wait)
		}
		if got := hasReason(drain(rec), ReasonTrustPending); got != tc.wait {
			t.Errorf("%s: TrustPending Event %v, want %v", tc.name, got, tc.wait)
		}
	}
}
