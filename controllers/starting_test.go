package controllers

import (
	"errors"
	"testing"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
)

// TestNotWhileStarting: the trust switch waits, with a TrustPending Event,
// while an instance CNPG counts (one per PVC group) may be starting: its Pod
// running but not ready (CNPG's "replicating"), or not in the status yet
// (initdb, join, a Pod just created: the status lags the Pods). No instance
// at all, all ready, the one not ready failed, or a hibernated Cluster (no
// Pod runs; each starts on the new files) does not hold it back.
func TestNotWhileStarting(t *testing.T) {
	for _, tc := range []struct {
		name   string
		names  []string // status.instanceNames
		status map[cnpgv1.PodStatus][]string
		ann    map[string]string
		wait   bool
	}{
		{"no instance (no CNPG status)", nil, nil, nil, false},
		{"initdb: counted, no Pod yet", []string{"pg-1"}, nil, nil, true},
		{"all ready", []string{"pg-1", "pg-2"}, map[cnpgv1.PodStatus][]string{cnpgv1.PodHealthy: {"pg-1", "pg-2"}}, nil, false},
		{"a replica starting", []string{"pg-1", "pg-2"}, map[cnpgv1.PodStatus][]string{cnpgv1.PodHealthy: {"pg-1"}, cnpgv1.PodReplicating: {"pg-2"}}, nil, true},
		{"a replica's Pod not in the status yet", []string{"pg-1", "pg-2"}, map[cnpgv1.PodStatus][]string{cnpgv1.PodHealthy: {"pg-1"}}, nil, true},
		{"the primary starting", []string{"pg-1"}, map[cnpgv1.PodStatus][]string{cnpgv1.PodReplicating: {"pg-1"}}, nil, true},
		{"a failed instance", []string{"pg-1", "pg-2"}, map[cnpgv1.PodStatus][]string{cnpgv1.PodHealthy: {"pg-1"}, cnpgv1.PodFailed: {"pg-2"}}, nil, false},
		{"hibernated: no Pod runs", []string{"pg-1", "pg-2"}, nil, map[string]string{cnpgHibernation: "on"}, false},
	} {
		r, rec, _ := testReconciler(nil)
		c := &cnpgv1.Cluster{}
		c.Name, c.Namespace, c.UID = "pg", "ns", "u1"
		c.Annotations, c.Status.InstanceNames, c.Status.InstancesStatus = tc.ann, tc.names, tc.status
		err := r.notWhileStarting(c, "SwitchCertificates", "switched")
		if got := errors.Is(err, errWaiting); got != tc.wait {
			t.Errorf("%s: waits %v (%v), want %v", tc.name, got, err, tc.wait)
		}
		if got := hasReason(drain(rec), ReasonTrustPending); got != tc.wait {
			t.Errorf("%s: TrustPending Event %v, want %v", tc.name, got, tc.wait)
		}
	}
}
