package controllers

import (
	"strings"
	"testing"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	"github.com/gravitational/teleport/api/types"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"

	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
)

func pooler(name string, typ cnpgv1.PoolerType, ann map[string]string, pb *cnpgv1.PgBouncerSpec) *cnpgv1.Pooler {
	return &cnpgv1.Pooler{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Annotations: ann},
		Spec:       cnpgv1.PoolerSpec{Cluster: cnpgv1.LocalObjectReference{Name: "pg"}, Type: typ, PgBouncer: pb},
	}
}

func TestPoolerDatabases(t *testing.T) {
	c := cluster("shop", "pg", 2, map[string]string{dbspec.AnnotationRegister: "true", dbspec.AnnotationPoolers: "pg-pooler-ro, pg-pooler-ro", dbspec.AnnotationLabels: "tier=gold"})
	spec, err := ParseAnnotations(opts, c)
	if err != nil || len(spec.Poolers) != 1 || spec.Poolers[0] != "pg-pooler-ro" {
		t.Fatalf("poolers annotation: %v %v", spec.Poolers, err)
	}
	rw := pooler("pg-pooler-rw", cnpgv1.PoolerTypeRW, map[string]string{dbspec.AnnotationRegister: "true"}, nil)
	ro := pooler("pg-pooler-ro", cnpgv1.PoolerTypeRO, nil, nil)
	other := pooler("pooler-x", cnpgv1.PoolerTypeRW, nil, nil)
	if !PoolerRegistered(rw, spec) || !PoolerRegistered(ro, spec) || PoolerRegistered(other, spec) {
		t.Fatal("PoolerRegistered: the Pooler's annotation or the Cluster's list, nothing else")
	}
	clashing := pooler("pooler-rw", cnpgv1.PoolerTypeRW, nil, nil) // pg-pooler-rw and pooler-rw: one db name
	dbs, clash, err := BuildPoolerDatabases(opts, c, spec, []*cnpgv1.Pooler{rw, ro, clashing}, testCA(t, "server-ca"))
	if err != nil {
		t.Fatal(err)
	}
	if len(dbs) != 2 || len(clash) != 1 || clash[0] != "pooler-rw" {
		t.Fatalf("dbs %d, clash %v", len(dbs), clash)
	}
	d := dbs[0]
	l := d.GetStaticLabels()
	if d.GetName() != "prod-shop-pg-pooler-rw" || d.GetURI() != "pg-pooler-rw.shop.svc.cluster.local:5432" ||
		d.GetTLS().Mode != types.DatabaseTLSMode_VERIFY_FULL || !strings.Contains(d.GetTLS().CACert, "BEGIN CERTIFICATE") {
		t.Fatalf("db %s %s %v", d.GetName(), d.GetURI(), d.GetTLS())
	}
	if l[dbspec.LabelPooler] != "pg-pooler-rw" || l[dbspec.LabelEndpoint] != "pooler" || l[dbspec.LabelSQLType] != "primary" || l["tier"] != "gold" ||
		l[dbspec.LabelClusterUID] != "uid-pg" || l["env"] != "prod" {
		t.Fatalf("labels %v", l)
	}
	if dbs[1].GetStaticLabels()[dbspec.LabelSQLType] != "standby" || dbs[1].GetName() != "prod-shop-pg-pooler-ro" {
		t.Fatalf("ro: %s %v", dbs[1].GetName(), dbs[1].GetStaticLabels())
	}
	// Owned by the Cluster: the same finalizer and orphan rules deregister them.
	if !OwnedByCluster(d, opts, c) {
		t.Fatal("a Pooler's db resource must be the Cluster's")
	}
	for _, bad := range []string{"Pg", "a_b", "-x"} {
		if _, err := ParseAnnotations(opts, cluster("shop", "pg", 1, map[string]string{dbspec.AnnotationRegister: "true", dbspec.AnnotationPoolers: bad})); err == nil {
			t.Errorf("poolers %q accepted", bad)
		}
	}
}

func TestUnregistrable(t *testing.T) {
	ref := &cnpgv1.LocalObjectReference{Name: "mine"}
	for name, tc := range map[string]struct {
		pb   *cnpgv1.PgBouncerSpec
		want string
	}{
		"automated":          {&cnpgv1.PgBouncerSpec{}, ""},
		"client CA = bundle": {&cnpgv1.PgBouncerSpec{ClientCASecret: &cnpgv1.LocalObjectReference{Name: "pg-teleport-ca"}}, ""},
		"own client CA":      {&cnpgv1.PgBouncerSpec{ClientCASecret: ref}, "clientCASecret mine"},
		"own client TLS":     {&cnpgv1.PgBouncerSpec{ClientTLSSecret: ref}, "clientTLSSecret mine"},
		"server TLS":         {&cnpgv1.PgBouncerSpec{ServerTLSSecret: ref}, "automated integration"},
		"auth query":         {&cnpgv1.PgBouncerSpec{AuthQuery: "SELECT 1"}, "automated integration"},
	} {
		got := unregistrable(pooler("p", cnpgv1.PoolerTypeRW, nil, tc.pb), "pg-teleport-ca")
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want %q", name, got, tc.want)
		}
	}
}

func TestTLSInputs(t *testing.T) {
	a, b := tlsInputs([]byte("bundle"), []byte("server")), tlsInputs([]byte("bundle"), []byte("server2"))
	if a == b || tlsInputs([]byte("bundles"), []byte("erver")) == a || len(a) != 16 {
		t.Fatalf("digest %s %s", a, b)
	}
}

// TestWarningsOncePerNote: two conflicts of one reason (rw and ro) are each
// reported once across passes, not re-emitted in turn; clear starts over.
func TestWarningsOncePerNote(t *testing.T) {
	rec := events.NewFakeRecorder(10)
	var w warnings
	c := cluster("shop", "pg", 2, nil)
	for range 3 {
		w.warn(rec, c, ReasonNameConflict, "Register", "db %s", "rw")
		w.warn(rec, c, ReasonNameConflict, "Register", "db %s", "ro")
	}
	if got := len(drain(rec)); got != 2 {
		t.Fatalf("%d events over three passes, want 2", got)
	}
	w.clear(c)
	w.warn(rec, c, ReasonNameConflict, "Register", "db %s", "rw")
	if got := len(drain(rec)); got != 1 {
		t.Fatalf("after clear: %d events, want 1", got)
	}
}
