package e2e

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnpg-teleport/cnpg-teleport/controllers"
	"github.com/cnpg-teleport/cnpg-teleport/teleport"
	"github.com/cnpg-teleport/cnpg-teleport/test/world"
)

// TestReplication proves, on a 2-instance Cluster the real CNPG runs with
// streaming replication, that the db resources the controller registered
// lead `tsh db connect` where they promise: rw to the primary, ro to a
// replica, and rw to the new primary after a switchover. PostgreSQL's trust
// in Teleport is set up by hand (world.TrustByHand) until the controller
// does it.
func TestReplication(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	w := world.Start(t, world.Options{})
	tp := startTeleport(t)
	const ns, name = "repl", "pg"
	if err := w.Namespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	id, err := tp.ControllerIdentity(ctx, "cnpg-teleport", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.UserKubeconfig("cnpg-teleport"); err != nil {
		t.Fatal(err)
	}
	if err := w.ApplyClusterRole(ctx, filepath.Join(world.RepoRoot(), "config", "rbac", "role.yaml"), "cnpg-teleport"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.StartControllerAs("controller", filepath.Join(w.Dir, "cnpg-teleport.kubeconfig"),
		"--teleport-addr="+tp.AuthAddr, "--identity-file="+id, "--kube-cluster=k1", "--namespaces="+ns,
		"--resync-period=2s", "--metrics-bind-address=127.0.0.1:18080", "--health-probe-bind-address=127.0.0.1:18081"); err != nil {
		t.Fatal(err)
	}

	c := world.NewCluster(ns, name, 2)
	c.Annotations = map[string]string{controllers.AnnotationRegister: "true"}
	t0 := time.Now()
	if err := w.Client.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	tc, err := teleport.New(ctx, teleport.Config{Addrs: []string{tp.AuthAddr}, IdentityFile: id})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tc.Close() }()
	cas, err := tc.DatabaseClientCAs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.TrustByHand(ctx, ns, name, bytes.Join(cas, nil), "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WaitClusterHealthy(ctx, ns, name, 4*time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("2-instance Cluster healthy (with the by-hand trust) in %s", time.Since(t0).Round(100*time.Millisecond))

	alice, err := tp.User(ctx, "alice", []string{"alice"}, []string{"postgres"})
	if err != nil {
		t.Fatal(err)
	}
	p := "k1-" + ns + "-" + name + "-"
	// where asks through db which server answers and whether it is a replica.
	where := func(db string) (string, error) {
		out, err := alice.Query(ctx, db, "alice", "postgres",
			"SELECT 'addr=' || host(inet_server_addr()) || ' recovery=' || pg_is_in_recovery() || ' user=' || current_user;")
		if err != nil {
			return "", fmt.Errorf("%w: %s", err, out)
		}
		i := strings.Index(out, "addr=")
		if i < 0 {
			return "", fmt.Errorf("unexpected output: %s", out)
		}
		return strings.Fields(out[i:])[0] + " " + strings.Fields(out[i:])[1] + " " + strings.Fields(out[i:])[2], nil
	}
	expect := func(db, instance, recovery string) {
		t.Helper()
		var pod corev1.Pod
		if err := w.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: instance}, &pod); err != nil {
			t.Fatal(err)
		}
		want := "addr=" + pod.Status.PodIP + " recovery=" + recovery + " user=alice"
		var last string
		world.Eventually(t, time.Minute, "tsh db connect "+db+" reaches "+instance, func() error {
			got, err := where(db)
			last = got
			if err != nil {
				return err
			}
			if got != want {
				return fmt.Errorf("got %q, want %q", got, want)
			}
			return nil
		})
		t.Logf("%s: %s (%s)", db, last, instance)
	}
	expect(p+"rw", name+"-1", "false")
	expect(p+"ro", name+"-2", "true")

	// Switchover, as `kubectl cnpg promote` asks for it.
	var cur cnpgv1.Cluster
	if err := w.Client.Get(ctx, client.ObjectKeyFromObject(c), &cur); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(cur.DeepCopy())
	cur.Status.TargetPrimary = name + "-2"
	cur.Status.Phase = cnpgv1.PhaseSwitchover
	cur.Status.PhaseReason = "Switching over to " + name + "-2"
	if err := w.Client.Status().Patch(ctx, &cur, patch); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	world.Eventually(t, 3*time.Minute, "switchover to "+name+"-2", func() error {
		got, err := w.WaitClusterHealthy(ctx, ns, name, time.Second)
		if err != nil {
			return err
		}
		if got.Status.CurrentPrimary != name+"-2" {
			return fmt.Errorf("current primary %s", got.Status.CurrentPrimary)
		}
		return nil
	})
	t.Logf("switchover -> healthy in %s", time.Since(t0).Round(100*time.Millisecond))
	expect(p+"rw", name+"-2", "false")
	expect(p+"ro", name+"-1", "true")
}
