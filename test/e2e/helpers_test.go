package e2e

import (
	"context"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cnpg-teleport/cnpg-teleport/teleport"
	"github.com/cnpg-teleport/cnpg-teleport/test/world"
)

// controllerClient is the controller's Teleport client as the binary makes
// it: the shipped least-privilege role, kube cluster k1; closed when the test ends.
func controllerClient(ctx context.Context, t *testing.T, tp *world.Teleport) *teleport.APIClient {
	t.Helper()
	idFile, err := tp.ControllerIdentity(ctx, "cnpg-teleport", time.Hour, "k1")
	if err != nil {
		t.Fatal(err)
	}
	tc, err := teleport.New(ctx, teleport.Config{Addrs: []string{tp.AuthAddr}, IdentityFile: idFile})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tc.Close() })
	return tc
}

// serverPKI issues, with the real cert-manager, a server CA <name>-server-ca
// and a server certificate <name>-server for every service name of the Cluster.
// It returns the CA Secret.
func serverPKI(ctx context.Context, t *testing.T, w *world.World, ns, name string) *corev1.Secret {
	t.Helper()
	ca, err := w.CreateCA(ctx, ns, name+"-server-ca")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.IssueCertificate(ctx, &cmapi.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-server"},
		Spec: cmapi.CertificateSpec{
			SecretName: name + "-server",
			CommonName: name + "-rw." + ns + ".svc.cluster.local",
			DNSNames:   world.ServiceNames(ns, name, "cluster.local"),
			Usages:     []cmapi.KeyUsage{cmapi.UsageServerAuth, cmapi.UsageDigitalSignature, cmapi.UsageKeyEncipherment},
			IssuerRef:  cmmeta.IssuerReference{Kind: cmapi.IssuerKind, Name: name + "-server-ca"},
		},
	}); err != nil {
		t.Fatal(err)
	}
	return ca
}

// startTeleport starts the world's Teleport for one test: its log is printed
// if the test fails, and it is stopped when the test ends.
func startTeleport(t *testing.T, opts ...world.TeleportOptions) *world.Teleport {
	t.Helper()
	tp, err := world.StartTeleportWith(t.TempDir(), append(opts, world.TeleportOptions{})[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log("teleport log:\n" + tp.Logs())
		}
		tp.Stop()
	})
	return tp
}

// raceChecked is a directory for a test/bench world: the data races its
// processes reported in their logs there fail the test when it ends.
func raceChecked(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() { world.CheckRaces(t, dir) })
	return dir
}
