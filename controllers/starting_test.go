package controllers

import (
	"errors"
	"testing"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
)

// TestNotWhileStarting: the trust switch waits while an instance's Pod runs
// but is not ready (CNPG's "replicating"), with a TrustPending Event; no
// instance yet (initdb), a Pod not running yet (pending: it loads the files
// when it starts) or a failed one does not hold it back.
func TestNotWhileStarting(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status map[cnpgv1.PodStatus][]string
		wait   bool
	}{
		{"no instance yet (initdb)", nil, false},
		{"all ready", map[cnpgv1.PodStatus][]string{cnpgv1.PodHealthy: {"pg-1", "pg-2"}}, false},
		{"a replica starting", map[cnpgv1.PodStatus][]string{cnpgv1.PodHealthy: {"pg-1"}, cnpgv1.PodReplicating: {"pg-2"}}, true},
		{"the primary starting", map[cnpgv1.PodStatus][]string{cnpgv1.PodReplicating: {"pg-1"}}, true},
		{"a failed instance", map[cnpgv1.PodStatus][]string{cnpgv1.PodHealthy: {"pg-1"}, cnpgv1.PodFailed: {"pg-2"}}, false},
	} {
		r, rec, _ := testReconciler(nil)
		c := &cnpgv1.Cluster{}
		c.Name, c.Namespace, c.UID = "pg", "ns", "u1"
		c.Status.InstancesStatus = tc.status
		err := r.notWhileStarting(c)
		if got := errors.Is(err, errWaiting); got != tc.wait {
			t.Errorf("%s: waits %v (%v), want %v", tc.name, got, err, tc.wait)
		}
		if got := hasReason(drain(rec), ReasonTrustPending); got != tc.wait {
			t.Errorf("%s: TrustPending Event %v, want %v", tc.name, got, tc.wait)
		}
	}
}
