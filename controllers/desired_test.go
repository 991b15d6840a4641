package controllers

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"strings"
	"testing"
	"time"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	"github.com/gravitational/teleport/api/types"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/cnpg-teleport/cnpg-teleport/clusterspec"
)

var opts = Options{KubeCluster: "prod", KubeClusterID: "id-prod", StaticLabels: map[string]string{"env": "prod", "team": "platform"}, Domain: "cluster.local",
	AnnotationLabels: map[string][]string{"team": nil, "tier": nil, "t": nil}}

func cluster(ns, name string, instances int, ann map[string]string) *cnpgv1.Cluster {
	return &cnpgv1.Cluster{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: k8stypes.UID("uid-" + name), Annotations: ann},
		Spec:       cnpgv1.ClusterSpec{Instances: instances},
	}
}

func testCA(t testing.TB, cn string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, IsCA: true,
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func names[D Labeled](dbs []D) []string {
	var out []string
	for _, d := range dbs {
		out = append(out, d.GetName())
	}
	return out
}

// TestAutoUsers: the grantable roles, admin_user on rw only and only once
// the trust step set it, and an admin_user change is an update.
func TestAutoUsers(t *testing.T) {
	c := cluster("ns", "c", 2, map[string]string{AnnotationRegister: "true", AnnotationAutoUsers: "true"})
	spec, err := ParseAnnotations(opts, c)
	if err != nil || !spec.AutoUsers || fmt.Sprint(spec.GrantRoles) != "[teleport_read teleport_write]" || spec.AdminUser != "" {
		t.Fatalf("%+v %v", spec, err)
	}
	c.Annotations[AnnotationAutoUserRoles] = " analyst , teleport_read,analyst"
	if spec, err = ParseAnnotations(opts, c); err != nil || fmt.Sprint(spec.GrantRoles) != "[analyst teleport_read]" {
		t.Fatalf("%+v %v", spec.GrantRoles, err)
	}
	c.Annotations[reservedPrefix+"admin-user"] = "postgres" // no annotation names the admin
	if spec, _ = ParseAnnotations(opts, c); spec.AdminUser != "" {
		t.Fatalf("admin %q from annotations", spec.AdminUser)
	}
	ca := testCA(t, "server-ca")
	before, err := BuildDatabases(opts, c, spec, ca)
	if err != nil {
		t.Fatal(err)
	}
	spec.AdminUser = clusterspec.AdminUser
	after, err := BuildDatabases(opts, c, spec, ca)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range after {
		want := ""
		if d.GetStaticLabels()[LabelEndpoint] == "rw" {
			want = clusterspec.AdminUser
		}
		if d.GetAdminUser().Name != want || before[i].GetAdminUser().Name != "" {
			t.Errorf("%s: admin_user %q (before %q), want %q", d.GetName(), d.GetAdminUser().Name, before[i].GetAdminUser().Name, want)
		}
		if NeedsUpdate(after[i], before[i]) != (want != "") {
			t.Errorf("%s: NeedsUpdate %v", d.GetName(), NeedsUpdate(after[i], before[i]))
		}
	}
	// The Cluster's own roles may not take the admin's name.
	c = cluster("ns", "c", 1, map[string]string{AnnotationAutoUsers: "true"})
	c.Spec.Managed = &cnpgv1.ManagedConfiguration{Roles: []cnpgv1.RoleConfiguration{{Name: clusterspec.AdminUser}}}
	if _, err := ParseAnnotations(opts, c); err == nil || !strings.Contains(err.Error(), "spec.managed.roles") {
		t.Fatalf("admin in managed.roles: %v", err)
	}
}

func TestOptedIn(t *testing.T) {
	for v, want := range map[string]bool{"true": true, "True": false, "yes": false, "": false, "1": false} {
		if got := OptedIn(cluster("ns", "c", 1, map[string]string{AnnotationRegister: v})); got != want {
			t.Errorf("%q: %v", v, got)
		}
	}
	if OptedIn(cluster("ns", "c", 1, nil)) {
		t.Error("no annotation must mean out")
	}
}

func TestParseAnnotationsErrors(t *testing.T) {
	tests := []struct {
		ann  map[string]string
		want []string // annotations named in the error
	}{
		{map[string]string{AnnotationEndpoints: "rw,bogus"}, []string{AnnotationEndpoints}},
		{map[string]string{AnnotationEndpoints: "rw,rw"}, []string{AnnotationEndpoints}},
		{map[string]string{AnnotationEndpoints: ""}, []string{AnnotationEndpoints}},
		{map[string]string{AnnotationLabels: "novalue"}, []string{AnnotationLabels}},
		{map[string]string{AnnotationLabels: "a=1,a=2"}, []string{AnnotationLabels}},
		{map[string]string{AnnotationLabels: "a=1,,b=2"}, []string{AnnotationLabels}},
		{map[string]string{AnnotationLabels: "bad key=1"}, []string{AnnotationLabels}},
		{map[string]string{AnnotationLabels: "a="}, []string{AnnotationLabels}},
		{map[string]string{AnnotationLabels: LabelManagedBy + "=me"}, []string{AnnotationLabels}},
		{map[string]string{AnnotationLabels: "sql_type=primary"}, []string{AnnotationLabels}},
		{map[string]string{AnnotationLabels: "teleport.dev/origin=x"}, []string{AnnotationLabels}},
		{map[string]string{AnnotationLabels: "teleport.internal/x=y"}, []string{AnnotationLabels}},
		{map[string]string{AnnotationName: "---"}, []string{AnnotationName}},
		{map[string]string{AnnotationName: "Billing_DB"}, []string{AnnotationName}},                    // never rewritten
		{map[string]string{AnnotationName: "ns-9lives-"}, []string{AnnotationName}},                    // not a Teleport name
		{map[string]string{AnnotationName: "日本語-db"}, []string{AnnotationName}},                        // would have become "db"
		{map[string]string{AnnotationName: "other-db"}, []string{AnnotationName}},                      // another namespace's names
		{map[string]string{AnnotationName: "ns-" + strings.Repeat("x", 58)}, []string{AnnotationName}}, // <name>-rw over 63
		{map[string]string{AnnotationLabels: "env=dev"}, []string{AnnotationLabels}},                   // not in the policy
		{map[string]string{AnnotationLabels: "tier=gold,owner=me"}, []string{AnnotationLabels}},        // one key not in it
		{map[string]string{AnnotationKeep: "yes"}, []string{AnnotationKeep}},
		{map[string]string{AnnotationAutoUsers: "yes"}, []string{AnnotationAutoUsers}},
		{map[string]string{AnnotationAutoUserRoles: "teleport_read"}, []string{AnnotationAutoUserRoles}}, // without auto-users
		{map[string]string{AnnotationAutoUsers: "true", AnnotationAutoUserRoles: "pg_read_server_files"}, []string{AnnotationAutoUserRoles}},
		{map[string]string{AnnotationAutoUsers: "true", AnnotationAutoUserRoles: "analyst,postgres"}, []string{AnnotationAutoUserRoles}},
		{map[string]string{AnnotationAutoUsers: "true", AnnotationAutoUserRoles: "teleport_admin"}, []string{AnnotationAutoUserRoles}},
		{map[string]string{AnnotationAutoUsers: "true", AnnotationAutoUserRoles: "app"}, []string{AnnotationAutoUserRoles}}, // owns the app database
		{map[string]string{AnnotationAutoUsers: "true", AnnotationAutoUserRoles: "Analyst"}, []string{AnnotationAutoUserRoles}},
		{map[string]string{AnnotationReadRole: "teleport_admin"}, []string{AnnotationReadRole}},
		{map[string]string{AnnotationEndpoints: "x", AnnotationLabels: "y", AnnotationKeep: "no"}, []string{AnnotationEndpoints, AnnotationLabels, AnnotationKeep}},
	}
	for _, tt := range tests {
		_, err := ParseAnnotations(opts, cluster("ns", "c", 1, tt.ann))
		var iae *InvalidAnnotationError
		if !errors.As(err, &iae) {
			t.Errorf("%v: want InvalidAnnotationError, got %v", tt.ann, err)
			continue
		}
		for _, a := range tt.want {
			if !strings.Contains(err.Error(), a) {
				t.Errorf("%v: error %q does not name %s", tt.ann, err, a)
			}
		}
	}
}

func TestDesiredDatabases(t *testing.T) {
	ca := testCA(t, "server-ca")
	tests := []struct {
		name      string
		c         *cnpgv1.Cluster
		wantNames []string
	}{
		{"1 instance: rw", cluster("app", "pg", 1, map[string]string{AnnotationRegister: "true"}), []string{"prod-app-pg-rw"}},
		{"3 instances: rw + ro", cluster("app", "pg", 3, map[string]string{AnnotationRegister: "true"}), []string{"prod-app-pg-rw", "prod-app-pg-ro"}},
		{"explicit endpoints", cluster("app", "pg", 3, map[string]string{AnnotationEndpoints: "r, rw"}), []string{"prod-app-pg-rw", "prod-app-pg-r"}},
		{"name as written", cluster("app", "pg", 1, map[string]string{AnnotationName: "app-Billing"}), []string{"app-Billing-rw"}},
		{"the namespace itself", cluster("app", "pg", 1, map[string]string{AnnotationName: "app"}), []string{"app-rw"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dbs, err := DesiredDatabases(opts, tt.c, ca)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(names(dbs), ","); got != strings.Join(tt.wantNames, ",") {
				t.Fatalf("names %s, want %v", got, tt.wantNames)
			}
			for _, db := range dbs {
				ep := db.GetStaticLabels()[LabelEndpoint]
				if db.GetURI() != tt.c.Name+"-"+ep+"."+tt.c.Namespace+".svc.cluster.local:5432" {
					t.Errorf("uri %s", db.GetURI())
				}
				if db.GetProtocol() != "postgres" || db.GetTLS().Mode != types.DatabaseTLSMode_VERIFY_FULL || db.GetTLS().CACert != string(ca) {
					t.Errorf("protocol %s tls %+v", db.GetProtocol(), db.GetTLS())
				}
				l := db.GetStaticLabels()
				want := map[string]string{"env": "prod", "team": "platform", LabelManagedBy: ManagedByValue, LabelKubeCluster: "prod",
					LabelNamespace: "app", LabelCluster: "pg", LabelClusterUID: "uid-pg", LabelSQLType: map[bool]string{true: "primary", false: "standby"}[ep == "rw"]}
				for k, v := range want {
					if l[k] != v {
						t.Errorf("label %s=%q, want %q", k, l[k], v)
					}
				}
				if !OwnedByCluster(db, opts, tt.c) || !OwnedBy(db, opts) {
					t.Error("a desired db must be owned by its Cluster")
				}
				if OwnedBy(db, Options{KubeCluster: "other", KubeClusterID: "id-prod"}) {
					t.Error("owned by another kube cluster")
				}
				twin := Options{KubeCluster: "prod", KubeClusterID: "id-twin"} // the same name, another cluster
				if OwnedBy(db, twin) || !IdentityConflict(db, twin) || IdentityConflict(db, opts) || Legacy(db) {
					t.Error("a Kubernetes cluster of the same --kube-cluster name must not own it, and must see the conflict")
				}
			}
		})
	}
}

func TestUserLabelsMergeOverStatic(t *testing.T) {
	dbs, err := DesiredDatabases(opts, cluster("a", "b", 1, map[string]string{AnnotationLabels: " team=db , tier=gold "}), testCA(t, "x"))
	if err != nil {
		t.Fatal(err)
	}
	l := dbs[0].GetStaticLabels()
	if l["team"] != "db" || l["tier"] != "gold" || l["env"] != "prod" {
		t.Fatalf("labels %v", l)
	}
}

func TestNamesUniqueAndShortened(t *testing.T) {
	ca := testCA(t, "x")
	seen := map[string]string{}
	long := strings.Repeat("very-long-cluster-name-", 4)
	for _, o := range []Options{{KubeCluster: "k1"}, {KubeCluster: "k2"}, {KubeCluster: "k1-a"}} {
		for _, ns := range []string{"a", "b", "a-b", "b-pg"} {
			for _, name := range []string{"pg", "b-pg", "pg-rw", long + "x1", long + "x2"} {
				o.Domain = "cluster.local"
				dbs, err := DesiredDatabases(o, cluster(ns, name, 3, nil), ca)
				if err != nil {
					t.Fatal(err)
				}
				for _, db := range dbs {
					n := db.GetName()
					if len(n) > maxNameLength || !regexp.MustCompile(`^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$`).MatchString(n) {
						t.Errorf("invalid name %q (%d chars)", n, len(n))
					}
					id := o.KubeCluster + "/" + ns + "/" + name + "/" + db.GetStaticLabels()[LabelEndpoint]
					if !strings.HasSuffix(n, "-"+db.GetStaticLabels()[LabelEndpoint]) {
						t.Errorf("%q does not end in its endpoint", n)
					}
					if prev, dup := seen[n]; dup {
						t.Errorf("%q names both %s and %s", n, prev, id)
					}
					seen[n] = id
				}
			}
		}
	}
}

// TestLegacyAdopted: a db resource made before the identity label is its
// Cluster's (the update adds the label, the name stays), and a legacy one.
func TestLegacyAdopted(t *testing.T) {
	c := cluster("app", "pg", 1, map[string]string{AnnotationRegister: "true"})
	dbs, err := DesiredDatabases(opts, c, testCA(t, "x"))
	if err != nil {
		t.Fatal(err)
	}
	old := dbs[0].Copy()
	l := old.GetStaticLabels()
	delete(l, LabelKubeClusterID)
	old.SetStaticLabels(l)
	if !OwnedByCluster(old, opts, c) || !Legacy(old) || IdentityConflict(old, opts) {
		t.Fatal("a legacy db resource must be adopted by its Cluster")
	}
	create, update, remove := Diff(dbs, []types.Database{old})
	if len(create)+len(remove) != 0 || len(update) != 1 || update[0].GetName() != old.GetName() {
		t.Fatalf("upgrade must update in place, never delete and re-create: create %d update %d remove %d", len(create), len(update), len(remove))
	}
}

func TestLabelPolicy(t *testing.T) {
	p, err := ParseLabelPolicy("team, env=dev|staging")
	if err != nil || p["team"] != nil || strings.Join(p["env"], "|") != "dev|staging" {
		t.Fatalf("%v %v", p, err)
	}
	o := opts
	o.AnnotationLabels = p
	for ann, ok := range map[string]bool{"team=x": true, "env=dev": true, "env=prod": false, "tier=gold": false} {
		_, err := ParseAnnotations(o, cluster("ns", "c", 1, map[string]string{AnnotationLabels: ann}))
		if (err == nil) != ok {
			t.Errorf("%s: %v", ann, err)
		}
	}
	for _, bad := range []string{"env=", LabelManagedBy, "a,a", "bad key"} {
		if _, err := ParseLabelPolicy(bad); err == nil {
			t.Errorf("policy %q accepted", bad)
		}
	}
	o.AnyName = true
	if _, err := ParseAnnotations(o, cluster("ns", "c", 1, map[string]string{AnnotationName: "other-db"})); err != nil {
		t.Errorf("--name-policy=any: %v", err)
	}
}

func TestServerCAChecked(t *testing.T) {
	c := cluster("a", "b", 1, nil)
	key := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte("k")})
	for name, ca := range map[string][]byte{"empty": nil, "garbage": []byte("nope"), "with a key": append(testCA(t, "x"), key...)} {
		if _, err := DesiredDatabases(opts, c, ca); !errors.Is(err, ErrNoServerCA) {
			t.Errorf("%s: want ErrNoServerCA, got %v", name, err)
		}
	}
}

func TestNeedsUpdateAndDiff(t *testing.T) {
	ca1, ca2 := testCA(t, "1"), testCA(t, "2")
	c := cluster("a", "pg", 3, map[string]string{AnnotationLabels: "t=1"})
	desired, err := DesiredDatabases(opts, c, ca1)
	if err != nil {
		t.Fatal(err)
	}
	// Server-set fields do not count.
	actual := desired[0].Copy()
	actual.SetRevision("rev-7")
	actual.SetExpiry(time.Now().Add(time.Hour))
	l := actual.GetStaticLabels()
	l[types.OriginLabel] = "dynamic"
	actual.SetStaticLabels(l)
	if NeedsUpdate(desired[0], actual) {
		t.Error("server-set fields caused an update")
	}
	if got := ForUpdate(desired[0], actual).GetRevision(); got != "rev-7" {
		t.Errorf("revision not carried: %q", got)
	}
	for name, mutate := range map[string]func(types.Database){
		"ca":    func(d types.Database) { d.SetCA(string(ca2)) },
		"uri":   func(d types.Database) { d.SetURI("x:1") },
		"label": func(d types.Database) { l := d.GetStaticLabels(); l["t"] = "2"; d.SetStaticLabels(l) },
	} {
		a := desired[0].Copy()
		mutate(a)
		if !NeedsUpdate(desired[0], a) {
			t.Errorf("%s change not detected", name)
		}
	}

	// instances 3 -> 1: ro goes.
	c1 := c.DeepCopy()
	c1.Spec.Instances = 1
	d1, err := DesiredDatabases(opts, c1, ca1)
	if err != nil {
		t.Fatal(err)
	}
	create, update, remove := Diff(d1, desired)
	if len(create) != 0 || len(update) != 0 || strings.Join(names(remove), ",") != "prod-a-pg-ro" {
		t.Fatalf("3->1: create %v update %v remove %v", names(create), names(update), names(remove))
	}
	// Renamed prefix: both new created, both old removed; CA change: updates.
	c2 := c.DeepCopy()
	c2.Annotations[AnnotationName] = "a-new"
	d2, err := DesiredDatabases(opts, c2, ca1)
	if err != nil {
		t.Fatal(err)
	}
	create, update, remove = Diff(d2, desired)
	if strings.Join(names(create), ",") != "a-new-ro,a-new-rw" || len(update) != 0 || len(remove) != 2 {
		t.Fatalf("rename: create %v update %v remove %v", names(create), names(update), names(remove))
	}
	d3, _ := DesiredDatabases(opts, c, ca2)
	create, update, remove = Diff(d3, desired)
	if len(create) != 0 || len(update) != 2 || len(remove) != 0 {
		t.Fatalf("ca change: create %v update %v remove %v", names(create), names(update), names(remove))
	}
	// Steady state: nothing.
	create, update, remove = Diff(desired, desired)
	if len(create)+len(update)+len(remove) != 0 {
		t.Fatal("steady state must plan no writes")
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Options{{}, {KubeCluster: "Bad_Name"}, {KubeCluster: "ok", StaticLabels: map[string]string{LabelManagedBy: "x"}}} {
		if err := o.Validate(); err == nil {
			t.Errorf("%+v: want an error", o)
		}
	}
	if err := (&Options{KubeCluster: "ok"}).Validate(); err == nil {
		t.Error("no identity: want an error")
	}
	o := Options{KubeCluster: "ok", KubeClusterID: "3f2a9c1e-0000-4000-8000-000000000001"}
	if err := o.Validate(); err != nil || o.Domain != "cluster.local" {
		t.Fatalf("%v %q", err, o.Domain)
	}
}
