package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cnpg-teleport/cnpg-teleport/test/world"
)

// TestListBeyondGRPCDefault: the one unpaginated list the controller makes
// (Teleport 13 has no paginated list of db resources) holds more than gRPC's
// default 4 MiB answer, as in a large shared Teleport: make bench met the
// limit at about 2,700 db resources. Here 800 carry a 7 KB CA bundle each.
func TestListBeyondGRPCDefault(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tp := startTeleport(t)
	tc := controllerClient(ctx, t, tp)
	var bundle []byte
	for i := range 12 {
		bundle = append(bundle, selfSigned(t, fmt.Sprintf("ca-%d", i))...)
	}
	const n = 800
	labels := map[string]string{managedBy: "cnpg-teleport", "cnpg-teleport.io/kube-cluster": "k1"}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range n {
		g.Go(func() error {
			return tc.CreateDatabase(gctx, pgDB(t, fmt.Sprintf("big-%04d", i), fmt.Sprintf("big-%04d.example:5432", i), bundle, labels))
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if n*len(bundle) <= 4<<20 {
		t.Fatalf("the list is %d bytes of CA alone: not beyond gRPC's default", n*len(bundle))
	}
	var dbs int
	deadline := time.Now().Add(30 * time.Second)
	for dbs < n { // Teleport's reads trail its writes
		got, err := tc.ListDatabases(ctx)
		if err != nil {
			t.Fatalf("listing %d db resources (%d MiB): %v", n, n*len(bundle)>>20, err)
		}
		if dbs = len(got); dbs < n && time.Now().After(deadline) {
			t.Fatalf("listed %d of %d", dbs, n)
		}
		// The list decodes each db's name and labels only: both must be there.
		for _, db := range got {
			for k, v := range labels {
				if !strings.HasPrefix(db.Name, "big-") || db.Labels[k] != v {
					t.Fatalf("listed %q with labels %v, want big-* with %v", db.Name, db.Labels, labels)
				}
			}
		}
	}
	t.Logf("listed %d db resources, %d MiB of CA bundles", dbs, n*len(bundle)>>20)

}

// TestDatabaseServersPaged: the agent check's list of db_server heartbeats
// (each carries a copy of its db resource, CA included) is read in pages of
// 100 and counted page by page; 250 db resources the world's agent serves
// take three pages. (800 db resources with 7 KB bundles, as above, are more
// than Teleport v13's own agent can cache: its unpaginated list fails with
// "received message larger than max" and it serves about a hundred.)
func TestDatabaseServersPaged(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tp := startTeleport(t)
	tc := controllerClient(ctx, t, tp)
	ca := selfSigned(t, "ca")
	const n = 250
	labels := map[string]string{managedBy: "cnpg-teleport", "cnpg-teleport.io/kube-cluster": "k1"}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range n {
		g.Go(func() error {
			return tc.CreateDatabase(gctx, pgDB(t, fmt.Sprintf("paged-%04d", i), fmt.Sprintf("paged-%04d.example:5432", i), ca, labels))
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	world.Eventually(t, time.Minute, "every db served", func() error {
		served, err := tc.DatabaseServers(ctx, labels)
		if err != nil {
			return err
		}
		got := 0
		for name, agents := range served {
			if strings.HasPrefix(name, "paged-") && agents == 1 {
				got++
			}
		}
		if got != n {
			out, _ := tp.Tctl(ctx, "", "get", "db_server", "--format=json")
			return fmt.Errorf("%d of %d served (tctl lists %d db_server)", got, n, strings.Count(string(out), `"kind": "db_server"`))
		}
		return nil
	})
	t.Logf("%d db_server heartbeats counted in pages in %s", n, time.Since(t0).Round(100*time.Millisecond))
}

// selfSigned is a throwaway CA certificate (PEM).
func selfSigned(t *testing.T, cn string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn, Organization: []string{"a CA bundle of some length"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
