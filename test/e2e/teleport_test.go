package e2e

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gravitational/teleport/api/types"
	"github.com/gravitational/trace"

	"github.com/cnpg-teleport/cnpg-teleport/test/world"
)

const managedBy = "cnpg-teleport.io/managed-by"

func pgDB(t *testing.T, name, uri string, caPEM []byte, labels map[string]string) types.Database {
	t.Helper()
	db, err := types.NewDatabaseV3(types.Metadata{Name: name, Labels: labels}, types.DatabaseSpecV3{
		Protocol: "postgres",
		URI:      uri,
		TLS:      types.DatabaseTLS{Mode: types.DatabaseTLSMode_VERIFY_FULL, CACert: string(caPEM)},
	})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// TestTeleportConnect proves the teleport package against a real Teleport and
// a Cluster the real CNPG runs: it registers a verify-full db resource (CNPG's
// own server CA) with the controller's least-privilege identity, PostgreSQL
// trusts the Teleport database-client CA fetched through the package, and
// `tsh db connect` lands a Teleport user in PostgreSQL as the database user
// it asked for.
func TestTeleportConnect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	w := world.Start(t, world.Options{})
	tp := startTeleport(t)
	const ns, name = "tp", "demo"
	if err := w.Namespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if err := w.Client.Create(ctx, world.NewCluster(ns, name, 1)); err != nil {
		t.Fatal(err)
	}

	// The controller's identity: the shipped least-privilege role only.
	tc := controllerClient(ctx, t, tp)
	info, err := tc.Ping(ctx)
	if err != nil || info.Name != tp.ClusterName {
		t.Fatalf("ping: %+v, %v", info, err)
	}

	// PostgreSQL trusts Teleport's database-client CA (db on v13), every
	// trusted key pair, the way users set it up by hand; CNPG applies it.
	cas, err := tc.DatabaseClientCAs(ctx)
	if err != nil || len(cas) != 1 {
		t.Fatalf("DatabaseClientCAs: %d certs, %v; want 1", len(cas), err)
	}
	if err := w.TrustByHand(ctx, ns, name, bytes.Join(cas, nil), "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WaitClusterHealthy(ctx, ns, name, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	serverCA := secret(ctx, t, w, ns, name+"-ca")

	// Register: verify-full, ca_cert = the CA cert-manager used for the server certificate.
	labels := map[string]string{managedBy: "cnpg-teleport", "cnpg-teleport.io/kube-cluster": "k1"}
	uri := name + "-rw." + ns + ".svc.cluster.local:5432"
	if err := tc.CreateDatabase(ctx, pgDB(t, "demo", uri, serverCA.Data["ca.crt"], labels)); err != nil {
		t.Fatal(err)
	}
	world.Eventually(t, 10*time.Second, "read back the db resource", func() error {
		got, err := tc.GetDatabase(ctx, "demo")
		if err != nil {
			return err
		}
		if got.GetTLS().Mode != types.DatabaseTLSMode_VERIFY_FULL || got.GetTLS().CACert != string(serverCA.Data["ca.crt"]) || got.GetURI() != uri {
			return trace.BadParameter("read back %+v", got.GetTLS())
		}
		return nil
	})

	alice, err := tp.User(ctx, "alice", []string{"alice"}, []string{"postgres"})
	if err != nil {
		t.Fatal(err)
	}
	world.Eventually(t, 20*time.Second, "tsh db ls lists demo", func() error {
		names, err := alice.DBNames(ctx)
		if err != nil {
			return err
		}
		if !slices.Contains(names, "demo") {
			return trace.NotFound("tsh db ls: %v", names)
		}
		return nil
	})
	world.Eventually(t, 30*time.Second, "tsh db connect", func() error {
		out, err := alice.Query(ctx, "demo", "alice", "postgres", "SELECT 'user=' || current_user;")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "user=alice") {
			return trace.BadParameter("unexpected output: %s", out)
		}
		return nil
	})

	// verify-full is in force: a resource whose ca_cert is another CA fails.
	other, err := w.CreateCA(ctx, ns, "other-ca")
	if err != nil {
		t.Fatal(err)
	}
	if err := tc.CreateDatabase(ctx, pgDB(t, "demo-wrong-ca", uri, other.Data["ca.crt"], labels)); err != nil {
		t.Fatal(err)
	}
	var lastOut string
	world.Eventually(t, 30*time.Second, "wrong ca_cert refused by the database agent", func() error {
		out, err := alice.Query(ctx, "demo-wrong-ca", "alice", "postgres", "SELECT 1;")
		lastOut = out
		if err == nil {
			t.Fatalf("connected through a db resource whose ca_cert is another CA:\n%s", out)
		}
		if !strings.Contains(out, "cannot validate database's certificate") {
			return trace.Retry(err, "not the verification failure yet")
		}
		return nil
	})
	t.Logf("wrong ca_cert: %s", strings.TrimSpace(lastOut))

	// Least privilege: no db resource outside the controller's labels.
	err = tc.CreateDatabase(ctx, pgDB(t, "foreign", uri, serverCA.Data["ca.crt"], map[string]string{"team": "x"}))
	if !trace.IsAccessDenied(err) {
		t.Fatalf("create outside the controller's labels: want AccessDenied, got %v", err)
	}

	// CA rotation: the package returns the active and the additional key pair.
	if _, err := tp.Tctl(ctx, "", "auth", "rotate", "--manual", "--type=db", "--phase=init"); err != nil {
		t.Fatal(err)
	}
	world.Eventually(t, 10*time.Second, "two db CA certificates during rotation", func() error {
		cas, err := tc.DatabaseClientCAs(ctx)
		if err != nil {
			return err
		}
		if len(cas) != 2 {
			return trace.BadParameter("%d certificates", len(cas))
		}
		return nil
	})
}
