package controllers

import (
	"testing"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"
)

// TestClusterChangedWakesOnCertificateStatus: CNPG reporting the client CA
// (or its version) it runs wakes the registration that waits for it; its
// other status writes do not.
func TestClusterChangedWakesOnCertificateStatus(t *testing.T) {
	base := &cnpgv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "pg", Generation: 1}}
	base.Status.Certificates.ClientCASecret = "pg-ca"
	base.Status.SecretsResourceVersion.ClientCASecretVersion = "1"
	for _, tt := range []struct {
		name   string
		change func(*cnpgv1.Cluster)
		want   bool
	}{
		{"nothing", func(*cnpgv1.Cluster) {}, false},
		{"another status field", func(c *cnpgv1.Cluster) { c.Status.Phase = "Cluster in healthy state"; c.Status.ReadyInstances = 2 }, false},
		{"another Secret's version", func(c *cnpgv1.Cluster) { c.Status.SecretsResourceVersion.ApplicationSecretVersion = "9" }, false},
		{"the client CA reported", func(c *cnpgv1.Cluster) { c.Status.Certificates.ClientCASecret = "pg-teleport-ca" }, true},
		{"its version reported", func(c *cnpgv1.Cluster) { c.Status.SecretsResourceVersion.ClientCASecretVersion = "2" }, true},
		{"the server certificate reported", func(c *cnpgv1.Cluster) { c.Status.Certificates.ServerTLSSecret = "pg-server" }, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := base.DeepCopy()
			tt.change(n)
			if got := clusterChanged().Update(event.UpdateEvent{ObjectOld: base, ObjectNew: n}); got != tt.want {
				t.Fatalf("wakes %v, want %v", got, tt.want)
			}
		})
	}
}
