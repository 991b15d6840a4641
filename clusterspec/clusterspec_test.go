package clusterspec

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	line := HBALine("teleport_read", "teleport_write")
	for name, c := range map[string]*cnpgv1.Cluster{
		"no certificates, no pg_hba":      cluster(nil),
		"empty certificates":              cluster(&cnpgv1.CertificatesConfiguration{}),
		"server secrets, user pg_hba":     cluster(&cnpgv1.CertificatesConfiguration{ServerCASecret: "s-ca", ServerTLSSecret: "s-tls"}, "host all all all reject"),
		"own client CA":                   cluster(&cnpgv1.CertificatesConfiguration{ClientCASecret: "mine", ReplicationTLSSecret: "repl"}, "local all all peer", "host all app all scram-sha-256"),
		"alt names, a stale line of ours": cluster(&cnpgv1.CertificatesConfiguration{ServerAltDNSNames: []string{"x.example"}}, "hostssl all old all cert "+Marker, "host all all all md5"),
	} {
		before := js(t, c.Spec)
		ours := Certs{ClientCASecret: bundleName} // a Secret's name, not a credential
		trusted := Trust(c, ours, line)
		if trusted.Spec.Certificates.ClientCASecret != bundleName || trusted.Spec.PostgresConfiguration.PgHBA[0] != line {
			t.Errorf("%s: trust: %s", name, js(t, trusted.Spec))
		}
		if !Trusted(trusted, ours, line) || !Changed(trusted) {
			t.Errorf("%s: Trusted/Changed false after Trust", name)
		}
		if again := Trust(trusted, ours, line); js(t, again) != js(t, trusted) {
			t.Errorf("%s: Trust is not idempotent:\n%s\n%s", name, js(t, again), js(t, trusted))
		}
		restored := Restore(trusted)
		want := before
		if strings.Contains(name, "stale") { // our stale line goes too
			want = strings.Replace(before, `"hostssl all old all cert `+Marker+`",`, "", 1)
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
	c := Trust(cluster(nil, "host all all all md5"), Certs{ClientCASecret: "b"}, line)
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
	line := HBALine("r", "w")
	got := MergeHBA([]string{"hostssl all all all reject", "  hostssl all r all cert " + Marker + "  ", "host all all all md5"}, line)
	want := []string{line, "hostssl all all all reject", "host all all all md5"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q", got)
	}
	if StripHBA([]string{line}) != nil {
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
	if got := OwnClientCASecret(Trust(cluster(&cnpgv1.CertificatesConfiguration{ClientCASecret: "mine"}), Certs{ClientCASecret: "b"}, "l"), "b"); got != "mine" {
		t.Errorf("user's, while trusted: %s", got)
	}
	if got := OwnClientCASecret(Trust(cluster(nil), Certs{ClientCASecret: "b"}, "l"), "b"); got != "pg-ca" {
		t.Errorf("CNPG's, while trusted: %s", got)
	}
}

func TestValidateRole(t *testing.T) {
	c := cluster(nil)
	c.Spec.Bootstrap = &cnpgv1.BootstrapConfiguration{InitDB: &cnpgv1.BootstrapInitDB{Owner: "app"}}
	c.Spec.Managed = &cnpgv1.ManagedConfiguration{Roles: []cnpgv1.RoleConfiguration{{Name: "admin"}}}
	for _, ok := range []string{"teleport_read", "_x", "ro1"} {
		if err := ValidateRole(c, ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "postgres", "streaming_replica", "cnpg_pooler_pgbouncer", "pg_monitor", "app", "admin", "Upper", "a-b", "a,b", "x y", strings.Repeat("a", 64)} {
		if err := ValidateRole(c, bad); err == nil {
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
	tr := Trust(c, want, HBALine("r", "w"))
	cs := tr.Spec.Certificates
	if cs.ClientCASecret != "b" || cs.ReplicationTLSSecret != "repl" || cs.ServerTLSSecret != "srv" || cs.ServerCASecret != "srv" {
		t.Fatalf("trust: %s", js(t, cs))
	}
	if !Trusted(tr, want, HBALine("r", "w")) || Trusted(tr, Certs{ClientCASecret: "other"}, HBALine("r", "w")) {
		t.Fatal("Trusted")
	}
	// A later pass that sets fewer fields keeps what was saved for all.
	tr2 := Trust(tr, Certs{ClientCASecret: "b"}, HBALine("r", "w"))
	if got := js(t, Restore(tr2).Spec); got != before {
		t.Fatalf("restore:\n got %s\nwant %s", got, before)
	}
}
