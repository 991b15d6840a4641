package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnpg-teleport/cnpg-teleport/controllers"
	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
	"github.com/cnpg-teleport/cnpg-teleport/teleport"
	"github.com/cnpg-teleport/cnpg-teleport/test/world"
)

// notAfter reads when an identity file's certificate expires.
func notAfter(t *testing.T, path string) time.Time {
	t.Helper()
	at, err := teleport.IdentityFileExpiry(path)
	if err != nil {
		t.Fatal(err)
	}
	return at
}

// TestIdentityExpiry: with the real Teleport, an expired controller identity
// (a short TTL from tctl) is reported: the expiry metric, and a Warning that
// says the identity expired and when, once Teleport drops the connection
// made before (Teleport checks a certificate when a connection opens, so an
// open one outlives it; here Teleport restarts). Renewed in place, as tbot
// does, the same process registers again: no restart.
func TestIdentityExpiry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	w := world.Start(t, world.Options{})
	tp := startTeleport(t)
	const ns = "expiry"
	if err := w.Namespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	id, err := tp.ControllerIdentity(ctx, "cnpg-teleport", time.Minute, "k1")
	if err != nil {
		t.Fatal(err)
	}
	expires := notAfter(t, id)
	if _, err := w.UserKubeconfig("cnpg-teleport"); err != nil {
		t.Fatal(err)
	}
	if err := w.ApplyClusterRole(ctx, filepath.Join(world.RepoRoot(), "config", "rbac", "role.yaml"), "cnpg-teleport"); err != nil {
		t.Fatal(err)
	}
	const metricsAddr = "127.0.0.1:18080"
	ctl, err := w.StartControllerAs("controller", filepath.Join(w.Dir, "cnpg-teleport.kubeconfig"),
		"--teleport-addr="+tp.AuthAddr, "--identity-file="+id, "--identity-reload-interval=1s", "--kube-cluster=k1", "--namespaces="+ns,
		"--resync-period=10s", "--metrics-bind-address="+metricsAddr, "--health-probe-bind-address=127.0.0.1:18081")
	if err != nil {
		t.Fatal(err)
	}
	b := &trustBed{t: t, ctx: ctx, w: w, tp: tp, id: id}
	expiryMetric := func(want time.Time) {
		t.Helper()
		world.Eventually(t, 30*time.Second, "identity expiry metric", func() error {
			v, err := metricValue(metricsAddr, "cnpg_teleport_identity_expiry_timestamp_seconds")
			if err != nil {
				return err
			}
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || int64(f) != want.Unix() {
				return fmt.Errorf("metric %s, want %d", v, want.Unix())
			}
			return nil
		})
	}
	expiryMetric(expires)
	t.Logf("identity expires in %s", time.Until(expires).Round(time.Second))

	create := func(name string) {
		t.Helper()
		c := world.NewCluster(ns, name, 1)
		c.Annotations = map[string]string{dbspec.AnnotationRegister: "true"}
		if err := w.Client.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	create("before")
	b.event(ns, "before", corev1.EventTypeNormal, controllers.ReasonRegistered)

	world.Eventually(t, time.Until(expires)+10*time.Second, "the identity expired", func() error {
		if d := time.Until(expires); d > 0 {
			return fmt.Errorf("%s left", d.Round(time.Second))
		}
		return nil
	})
	tp.Stop() // Teleport drops every connection; the controller's next one needs its certificate
	if err := tp.Start(); err != nil {
		t.Fatal(err)
	}
	create("after")
	var note string
	world.Eventually(t, 2*time.Minute, "a Warning naming the expired identity", func() error {
		note = b.warningNote(ns, "after", controllers.ReasonTeleportUnavailable)
		if !strings.Contains(note, "Teleport identity "+id+" expired at "+expires.UTC().Format(time.RFC3339)) {
			return fmt.Errorf("note %q", note)
		}
		return nil
	})
	t.Logf("expired: %s", note)

	pid := ctl.PID()
	renewed, err := tp.SignIdentity(ctx, "cnpg-teleport", time.Hour) // as tbot: the same file, rewritten
	if err != nil || renewed != id {
		t.Fatalf("renewal %s, %v", renewed, err)
	}
	expiryMetric(notAfter(t, id))
	t0 := time.Now()
	b.event(ns, "after", corev1.EventTypeNormal, controllers.ReasonRegistered)
	t.Logf("registered %s after the renewal", time.Since(t0).Round(100*time.Millisecond))
	if ctl.PID() != pid {
		t.Fatal("the controller restarted")
	}
	if done, err := ctl.Exited(); done {
		t.Fatalf("the controller exited: %v", err)
	}
}

// warningNote returns the notes of the Warning Events of reason on name.
func (b *trustBed) warningNote(ns, name, reason string) string {
	var list eventsv1.EventList
	if err := b.w.Client.List(b.ctx, &list, client.InNamespace(ns)); err != nil {
		return err.Error()
	}
	var notes []string
	for _, e := range list.Items {
		if e.Regarding.Name == name && e.Reason == reason && e.Type == corev1.EventTypeWarning {
			notes = append(notes, e.Note)
		}
	}
	return strings.Join(notes, " | ")
}
