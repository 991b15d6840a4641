package clusterspec

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cnpg-teleport/cnpg-teleport/pgrules"
)

const bundleName = "pg-teleport-ca"

func cluster(certs *cnpgv1.CertificatesConfiguration, hba ...string) *cnpgv1.Cluster {
	c := &cnpgv1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pg", UID: "u1", Annotations: map[string]string{"user": "x"}}}
	c.Spec.Certificates = certs
	c.Spec.PostgresConfiguration.PgHBA = hba
	return c
}

func js(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestTrustRestore: trust then restore gives back the user's slice byte for
// byte (JSON), whatever it was, and keeps what the user changed meanwhile.
func TestTrustRestore(t *testing.T) {
	line := pgrules.HBALine("teleport_read", "teleport_write")
	for name, c := range map[string]*cnpgv1.Cluster{
		"no certificates, no pg_hba":      cluster(nil),
		"empty certificates":              cluster(&cnpgv1.CertificatesConfiguration{}),
		"server secrets, user pg_hba":     cluster(&cnpgv1.CertificatesConfiguration{ServerCASecret: "s-ca", ServerTLSSecret: "s-tls"}, "host all all all reject"),
		"own client CA":                   cluster(&cnpgv1.CertificatesConfiguration{ClientCASecret: "mine", ReplicationTLSSecret: "repl"}, "local all all peer", "host all app all scram-sha-256"),
		"alt names, a stale line of ours": cluster(&cnpgv1.CertificatesConfiguration{ServerAltDNSNames: []string{"x.example"}}, "hostssl all old all cert "+pgrules.Marker, "host all all all md5"),
	} {
		before := js(t, c.Spec)
		ours := Certs{ClientCASecret: bundleName} // a Secret's name, not a credential
		trusted := Trust(c, sl(ours, line))
		if trusted.Spec.Certificates.ClientCASecret != bundleName || trusted.Spec.PostgresConfiguration.PgHBA[0] != line {
			t.Errorf("%s: trust: %s", name, js(t, trusted.Spec))
		}
		if !Trusted(trusted, sl(ours, line)) || !Changed(trusted) {
			t.Errorf("%s: Trusted/Changed false after Trust", name)
		}
		if again := Trust(trusted, sl(ours, line)); js(t, again) != js(t, trusted) {
			t.Errorf("%s: Trust is not idempotent:\n%s\n%s", name, js(t, again), js(t, trusted))
		}
		restored := Restore(trusted)
		want := before
		if strings.Contains(name, "stale") { // our stale line goes too
			want = strings.Replace(before, `"hostssl all old all cert `+pgrules.Marker+`",`, "", 1)
		}
		if got := js(t, restored.Spec); got != want {
			t.Errorf("%s: restore:\n got %s\nwant %s", name, got, want)
		}
		if js(t, restored.Annotations) != `{"user":"x"}` || Changed(restored) {
			t.Errorf("%s: annotations %v", name, restored.Annotations)
		}
		if js(t, c.Spec) != before {
			t.Errorf("%s: the input was modified", name)
		}
	}
	// A change the user makes while trusted survives the restore.
	c := Trust(cluster(nil, "host all all all md5"), sl(Certs{ClientCASecret: "b"}, line))
	c.Spec.PostgresConfiguration.PgHBA = append(c.Spec.PostgresConfiguration.PgHBA, "host all extra all md5")
	c.Spec.Certificates.ServerAltDNSNames = []string{"new.example"}
	r := Restore(c)
	if !slices.Equal(r.Spec.PostgresConfiguration.PgHBA, []string{"host all all all md5", "host all extra all md5"}) ||
		r.Spec.Certificates == nil || r.Spec.Certificates.ServerAltDNSNames[0] != "new.example" || r.Spec.Certificates.ClientCASecret != "" {
		t.Errorf("user changes lost: %s", js(t, r.Spec))
	}
}

// TestMergeHBA: ours first (nothing the user writes can shadow it), user lines in order.
func TestMergeHBA(t *testing.T) {
	line := pgrules.HBALine("r", "w")
	got := pgrules.MergeHBA([]string{"hostssl all all all reject", "  hostssl all r all cert " + pgrules.Marker + "  ", "host all all all md5"}, line)
	want := []string{line, "hostssl all all all reject", "host all all all md5"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q", got)
	}
	if pgrules.StripHBA([]string{line}) != nil {
		t.Error("StripHBA of only ours: want nil (the user had no pg_hba)")
	}
	if line != "hostssl all r,w all cert # cnpg-teleport" {
		t.Errorf("line %q", line)
	}
}

func TestOwnClientCASecret(t *testing.T) {
	if got := OwnClientCASecret(cluster(nil), "b"); got != "pg-ca" {
		t.Errorf("default: %s", got)
	}
	if got := OwnClientCASecret(cluster(&cnpgv1.CertificatesConfiguration{ClientCASecret: "mine"}), "b"); got != "mine" {
		t.Errorf("user's: %s", got)
	}
	if got := OwnClientCASecret(Trust(cluster(&cnpgv1.CertificatesConfiguration{ClientCASecret: "mine"}), sl(Certs{ClientCASecret: "b"}, "l")), "b"); got != "mine" {
		t.Errorf("user's, while trusted: %s", got)
	}
	if got := OwnClientCASecret(Trust(cluster(nil), sl(Certs{ClientCASecret: "b"}, "l")), "b"); got != "pg-ca" {
		t.Errorf("CNPG's, while trusted: %s", got)
	}
}

// TestRoleFacts: the role checks read the Cluster's initdb owner and managed roles.
func TestRoleFacts(t *testing.T) {
	c := cluster(nil)
	c.Spec.Bootstrap = &cnpgv1.BootstrapConfiguration{InitDB: &cnpgv1.BootstrapInitDB{Owner: "app"}}
	c.Spec.Managed = &cnpgv1.ManagedConfiguration{Roles: []cnpgv1.RoleConfiguration{{Name: "admin"}}}
	for _, ok := range []string{"teleport_read", "_x", "ro1"} {
		if err := RoleFacts(c).CheckRole(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "postgres", "streaming_replica", "cnpg_pooler_pgbouncer", "pg_monitor", "app", "admin", "Upper", "a-b", "a,b", "x y", strings.Repeat("a", 64)} {
		if err := RoleFacts(c).CheckRole(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestDatabaseRole(t *testing.T) {
	c := cluster(nil)
	roles := Roles("teleport_read", "teleport_write")
	r := DatabaseRole(c, roles[0], map[string]string{"l": "v"})
	if r.Name != "pg-teleport-read" || r.Namespace != "ns" || r.Spec.Name != "teleport_read" || !r.Spec.Login ||
		!slices.Equal(r.Spec.InRoles, []string{"pg_read_all_data"}) || r.Spec.ClusterRef.Name != "pg" ||
		r.Spec.ReclaimPolicy != cnpgv1.DatabaseRoleReclaimDelete || !r.Spec.DisablePassword || r.Spec.Superuser {
		t.Fatalf("read role %+v", r)
	}
	if len(r.OwnerReferences) != 1 || r.OwnerReferences[0].UID != "u1" || r.Labels["l"] != "v" {
		t.Fatalf("owner/labels %+v", r.ObjectMeta)
	}
	w := DatabaseRole(c, roles[1], nil)
	if !slices.Equal(w.Spec.InRoles, []string{"pg_read_all_data", "pg_write_all_data"}) {
		t.Fatalf("write role %v", w.Spec.InRoles)
	}
}

func TestMergeDatabaseRole(t *testing.T) {
	want := DatabaseRole(cluster(nil), Roles("r", "w")[0], nil).Spec
	defaulted := *want.DeepCopy()
	defaulted.ConnectionLimit = -1 // set by CNPG's webhook
	if got := MergeDatabaseRole(defaulted, want); js(t, got) != js(t, defaulted) {
		t.Errorf("a defaulted field must not cause an update:\n%s\n%s", js(t, got), js(t, defaulted))
	}
	edited := *defaulted.DeepCopy()
	edited.Superuser, edited.InRoles = true, []string{"pg_write_all_data"}
	got := MergeDatabaseRole(edited, want)
	if got.Superuser || !slices.Equal(got.InRoles, []string{"pg_read_all_data"}) || got.ConnectionLimit != -1 {
		t.Errorf("a hand edit must be undone, defaults kept: %s", js(t, got))
	}
}

// TestTrustRestoreIssuerMode: several fields replaced, each restored.
func TestTrustRestoreIssuerMode(t *testing.T) {
	c := cluster(&cnpgv1.CertificatesConfiguration{ServerCASecret: "user-ca"}, "host all all all md5")
	before := js(t, c.Spec)
	want := Certs{ClientCASecret: "b", ReplicationTLSSecret: "repl", ServerTLSSecret: "srv", ServerCASecret: "srv"}
	tr := Trust(c, sl(want, pgrules.HBALine("r", "w")))
	cs := tr.Spec.Certificates
	if cs.ClientCASecret != "b" || cs.ReplicationTLSSecret != "repl" || cs.ServerTLSSecret != "srv" || cs.ServerCASecret != "srv" {
		t.Fatalf("trust: %s", js(t, cs))
	}
	if !Trusted(tr, sl(want, pgrules.HBALine("r", "w"))) || Trusted(tr, sl(Certs{ClientCASecret: "other"}, pgrules.HBALine("r", "w"))) {
		t.Fatal("Trusted")
	}
	// A later pass that sets fewer fields keeps what was saved for all.
	tr2 := Trust(tr, sl(Certs{ClientCASecret: "b"}, pgrules.HBALine("r", "w")))
	if got := js(t, Restore(tr2).Spec); got != before {
		t.Fatalf("restore:\n got %s\nwant %s", got, before)
	}
}

func sl(c Certs, line string) Slice { return Slice{Certs: c, HBA: []string{line}} }

// TestTrustRestorePoolers: the mapped line, the pg_ident lines and the
// Poolers' server names come and go exactly; a name the user had stays.
func TestTrustRestorePoolers(t *testing.T) {
	c := cluster(&cnpgv1.CertificatesConfiguration{ServerAltDNSNames: []string{"pg-pooler.ns.svc", "x.example"}}, "host all all all md5")
	c.Spec.PostgresConfiguration.PgIdent = []string{"mymap alice app"}
	before := js(t, c.Spec)
	want := Slice{
		Certs: Certs{ClientCASecret: "b"}, HBA: []string{pgrules.MappedHBALine("r", "w")}, Ident: pgrules.IdentLines("r", "w"),
		AltDNSNames: []string{"pg-pooler", "pg-pooler.ns.svc", "other-pooler"},
	}
	tr := Trust(c, want)
	cs, pg := tr.Spec.Certificates, tr.Spec.PostgresConfiguration
	if !slices.Equal(cs.ServerAltDNSNames, []string{"pg-pooler.ns.svc", "x.example", "pg-pooler", "other-pooler"}) {
		t.Fatalf("alt names %q", cs.ServerAltDNSNames)
	}
	if pg.PgHBA[0] != "hostssl all r,w all cert map=cnpg-teleport # cnpg-teleport" || len(pg.PgIdent) != 5 ||
		pg.PgIdent[0] != "cnpg-teleport r r # cnpg-teleport" || pg.PgIdent[3] != "cnpg-teleport cnpg_pooler_pgbouncer w # cnpg-teleport" || pg.PgIdent[4] != "mymap alice app" {
		t.Fatalf("hba %q ident %q", pg.PgHBA, pg.PgIdent)
	}
	if u := UserAltDNSNames(tr); !slices.Equal(u, []string{"pg-pooler.ns.svc", "x.example"}) {
		t.Fatalf("user's names %q", u)
	}
	if !Trusted(tr, want) || Trusted(tr, Slice{Certs: want.Certs, HBA: want.HBA, Ident: want.Ident}) {
		t.Fatal("Trusted must see the names")
	}
	// A Pooler goes: its names and the map go, the user's name stays.
	fewer := Slice{Certs: want.Certs, HBA: []string{pgrules.HBALine("r", "w")}, AltDNSNames: []string{"pg-pooler.ns.svc"}}
	tr2 := Trust(tr, fewer)
	if !slices.Equal(tr2.Spec.Certificates.ServerAltDNSNames, []string{"pg-pooler.ns.svc", "x.example"}) || tr2.Spec.PostgresConfiguration.PgIdent[0] != "mymap alice app" {
		t.Fatalf("fewer: %s", js(t, tr2.Spec))
	}
	if !Trusted(tr2, fewer) {
		t.Fatal("Trusted after fewer")
	}
	for _, x := range []*cnpgv1.Cluster{tr, tr2} {
		if got := js(t, Restore(x).Spec); got != before {
			t.Fatalf("restore:\n got %s\nwant %s", got, before)
		}
	}
}

func TestTrustRestorePooler(t *testing.T) {
	p := &cnpgv1.Pooler{ObjectMeta: metav1.ObjectMeta{Name: "pg-pooler", Namespace: "ns", Annotations: map[string]string{"a": "b"}},
		Spec: cnpgv1.PoolerSpec{PgBouncer: &cnpgv1.PgBouncerSpec{PgHBA: []string{"host all all all reject"}}}}
	before := js(t, p)
	line := pgrules.PoolerHBALine("r", "w")
	tr := TrustPooler(p, "d1", line)
	if tr.Annotations[AnnotationInputs] != "d1" || !slices.Equal(tr.Spec.PgBouncer.PgHBA, []string{line, "host all all all reject"}) {
		t.Fatalf("trust: %s", js(t, tr))
	}
	if !PoolerTrusted(tr, "d1", line) || PoolerTrusted(tr, "d2", line) || PoolerTrusted(tr, "d1", "") || !PoolerChanged(tr) {
		t.Fatal("PoolerTrusted")
	}
	un := TrustPooler(tr, "d1", "") // no longer registered: the line goes, the digest stays
	if len(un.Spec.PgBouncer.PgHBA) != 1 || un.Annotations[AnnotationInputs] != "d1" {
		t.Fatalf("unregistered: %s", js(t, un))
	}
	if got := js(t, RestorePooler(tr)); got != before {
		t.Fatalf("restore:\n got %s\nwant %s", got, before)
	}
	if names := PoolerDNSNames(p, "cluster.local"); !slices.Equal(names, []string{"pg-pooler", "pg-pooler.ns", "pg-pooler.ns.svc", "pg-pooler.ns.svc.cluster.local"}) {
		t.Fatalf("names %q", names)
	}
}
