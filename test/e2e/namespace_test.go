package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
	"github.com/cnpg-teleport/cnpg-teleport/test/world"
)

// TestNamespaceDeletion (issue 21): a namespace deleted with opted-in
// Clusters, a registered Pooler and the controller's own objects in it
// (bundles, DatabaseRoles) goes away, with the real kube-controller-manager,
// CNPG and Teleport: its db resources are deregistered by the Clusters'
// finalizers (not by orphan collection), the one asked to be kept is kept and
// labelled so, no finalizer is left hanging, and a db resource the
// controller did not make is untouched.
func TestNamespaceDeletion(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	const ns, name = "doomed", "pg"
	b := newTrustBed(t, ctx, ns)
	w := b.w
	if err := b.tp.Create(ctx, "kind: db\nversion: v3\nmetadata:\n  name: foreign-doomed\n  labels: {owner: someone-else}\n"+
		"spec:\n  protocol: postgres\n  uri: doomed.example.com:5432\n"); err != nil {
		t.Fatal(err)
	}

	c := world.NewCluster(ns, name, 1)
	c.Annotations = map[string]string{dbspec.AnnotationRegister: "true", dbspec.AnnotationPoolers: name + "-pooler-rw"}
	if err := w.Client.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := w.Client.Create(ctx, newPooler(ns, name, name+"-pooler-rw", nil)); err != nil {
		t.Fatal(err)
	}
	kept := world.NewCluster(ns, "kept", 1) // asks its db resource to outlive it
	kept.Annotations = map[string]string{dbspec.AnnotationRegister: "true", dbspec.AnnotationKeep: "true"}
	if err := w.Client.Create(ctx, kept); err != nil {
		t.Fatal(err)
	}
	ours := func() ([]string, error) {
		out, err := b.tp.Tctl(ctx, "", "get", "db", "--format=json")
		if err != nil {
			return nil, err
		}
		var dbs []struct {
			Metadata struct{ Name string } `json:"metadata"`
		}
		if err := json.Unmarshal(out, &dbs); err != nil {
			return nil, err
		}
		var names []string
		for _, d := range dbs {
			if strings.HasPrefix(d.Metadata.Name, "k1-"+ns+"-") {
				names = append(names, d.Metadata.Name)
			}
		}
		return names, nil
	}
	world.Eventually(t, 4*time.Minute, "the Clusters and the Pooler registered", func() error {
		names, err := ours()
		if err != nil {
			return err
		}
		if len(names) != 3 {
			return fmt.Errorf("db resources %v", names)
		}
		return nil
	})
	for _, obj := range []client.Object{&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-teleport-ca"}}} {
		if err := w.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			t.Fatalf("the controller's %T: %v", obj, err)
		}
	}

	t0 := time.Now()
	if err := w.Client.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	world.Eventually(t, 4*time.Minute, "the namespace gone", func() error {
		var n corev1.Namespace
		err := w.Client.Get(ctx, client.ObjectKey{Name: ns}, &n)
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		return fmt.Errorf("phase %s, conditions %v", n.Status.Phase, n.Status.Conditions)
	})
	t.Logf("namespace gone in %s", time.Since(t0).Round(100*time.Millisecond))
	names, err := ours()
	if err != nil || !slices.Equal(names, []string{"k1-" + ns + "-kept-rw"}) {
		t.Fatalf("db resources left: %v, want only the kept one (%v)", names, err)
	}
	if out, err := b.tp.Tctl(ctx, "", "get", "db/k1-"+ns+"-kept-rw", "--format=json"); err != nil || !strings.Contains(string(out), `"`+dbspec.LabelKeep+`": "true"`) {
		t.Fatalf("the kept db resource is not labelled kept: %v %s", err, out)
	}
	// Deregistered by the Clusters' own finalizers, not left to orphan
	// collection (which would also have removed them, a resync later).
	if log, err := os.ReadFile(filepath.Join(w.Dir, "controller.log")); err != nil || strings.Contains(string(log), "deleted orphaned Teleport db") {
		t.Fatalf("orphan collection deleted db resources of the namespace (%v)", err)
	}
	if out, err := b.tp.Tctl(ctx, "", "get", "db/foreign-doomed", "--format=json"); err != nil {
		t.Fatalf("the foreign db resource: %v %s", err, out)
	}
}
