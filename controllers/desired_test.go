package controllers

import (
	"encoding/pem"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	"github.com/gravitational/teleport/api/types"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
	"github.com/cnpg-teleport/cnpg-teleport/internal/testpki"
	"github.com/cnpg-teleport/cnpg-teleport/pgrules"
)

var opts = dbspec.Options{KubeCluster: "prod", KubeClusterID: "id-prod", StaticLabels: map[string]string{"env": "prod", "team": "platform"}, Domain: "cluster.local",
	AnnotationLabels: map[string][]string{"team": nil, "tier": nil, "t": nil}}

func cluster(ns, name string, instances int, ann map[string]string) *cnpgv1.Cluster {
	return &cnpgv1.Cluster{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: k8stypes.UID("uid-" + name), Annotations: ann},
		Spec:       cnpgv1.ClusterSpec{Instances: instances},
	}
}

// validDBName: Teleport's rule for a db name (letters, digits, '-'; a
// letter first; not ending with '-'), at most 63 characters (a DNS label).
func validDBName(n string) bool {
	return len(n) <= 63 && teleportDBName.MatchString(n) && len(validation.IsDNS1123Label(strings.ToLower(n))) == 0
}

var teleportDBName = regexp.MustCompile(`^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$`)

// testCA is a self-signed CA certificate's PEM.
var testCA = testpki.Cert

func names[D dbspec.Labeled](dbs []D) []string {
	var out []string
	for _, d := range dbs {
		out = append(out, d.GetName())
	}
	return out
}

// TestAutoUsers: the grantable roles, admin_user on rw only and only once
// the trust step set it, and an admin_user change is an update.
func TestAutoUsers(t *testing.T) {
	c := cluster("ns", "c", 2, map[string]string{dbspec.AnnotationRegister: "true", dbspec.AnnotationAutoUsers: "true"})
	spec, err := ParseAnnotations(opts, c)
	if err != nil || !spec.AutoUsers || fmt.Sprint(spec.GrantRoles) != "[teleport_read teleport_write]" || spec.AdminUser != "" {
		t.Fatalf("%+v %v", spec, err)
	}
	c.Annotations[dbspec.AnnotationAutoUserRoles] = " analyst , teleport_read,analyst"
	if spec, err = ParseAnnotations(opts, c); err != nil || fmt.Sprint(spec.GrantRoles) != "[analyst teleport_read]" {
		t.Fatalf("%+v %v", spec.GrantRoles, err)
	}
	c.Annotations["cnpg-teleport.io/admin-user"] = "postgres" // no annotation names the admin
	if spec, _ = ParseAnnotations(opts, c); spec.AdminUser != "" {
		t.Fatalf("admin %q from annotations", spec.AdminUser)
	}
	ca := testCA(t, "server-ca")
	before, err := BuildDatabases(opts, c, spec, ca)
	if err != nil {
		t.Fatal(err)
	}
	spec.AdminUser = pgrules.AdminUser
	after, err := BuildDatabases(opts, c, spec, ca)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range after {
		want := ""
		if d.GetStaticLabels()[dbspec.LabelEndpoint] == "rw" {
			want = pgrules.AdminUser
		}
		if d.GetAdminUser().Name != want || before[i].GetAdminUser().Name != "" {
			t.Errorf("%s: admin_user %q (before %q), want %q", d.GetName(), d.GetAdminUser().Name, before[i].GetAdminUser().Name, want)
		}
		if dbspec.NeedsUpdate(after[i], before[i]) != (want != "") {
			t.Errorf("%s: dbspec.NeedsUpdate %v", d.GetName(), dbspec.NeedsUpdate(after[i], before[i]))
		}
	}
	// The Cluster's own roles may not take the admin's name.
	c = cluster("ns", "c", 1, map[string]string{dbspec.AnnotationAutoUsers: "true"})
	c.Spec.Managed = &cnpgv1.ManagedConfiguration{Roles: []cnpgv1.RoleConfiguration{{Name: pgrules.AdminUser}}}
	if _, err := ParseAnnotations(opts, c); err == nil || !strings.Contains(err.Error(), "spec.managed.roles") {
		t.Fatalf("admin in managed.roles: %v", err)
	}
}

func TestOptedIn(t *testing.T) {
	for v, want := range map[string]bool{"true": true, "True": false, "yes": false, "": false, "1": false} {
		if got := OptedIn(cluster("ns", "c", 1, map[string]string{dbspec.AnnotationRegister: v})); got != want {
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
		{map[string]string{dbspec.AnnotationEndpoints: "rw,bogus"}, []string{dbspec.AnnotationEndpoints}},
		{map[string]string{dbspec.AnnotationEndpoints: "rw,rw"}, []string{dbspec.AnnotationEndpoints}},
		{map[string]string{dbspec.AnnotationEndpoints: ""}, []string{dbspec.AnnotationEndpoints}},
		{map[string]string{dbspec.AnnotationLabels: "novalue"}, []string{dbspec.AnnotationLabels}},
		{map[string]string{dbspec.AnnotationLabels: "a=1,a=2"}, []string{dbspec.AnnotationLabels}},
		{map[string]string{dbspec.AnnotationLabels: "a=1,,b=2"}, []string{dbspec.AnnotationLabels}},
		{map[string]string{dbspec.AnnotationLabels: "bad key=1"}, []string{dbspec.AnnotationLabels}},
		{map[string]string{dbspec.AnnotationLabels: "a="}, []string{dbspec.AnnotationLabels}},
		{map[string]string{dbspec.AnnotationLabels: dbspec.LabelManagedBy + "=me"}, []string{dbspec.AnnotationLabels}},
		{map[string]string{dbspec.AnnotationLabels: "sql_type=primary"}, []string{dbspec.AnnotationLabels}},
		{map[string]string{dbspec.AnnotationLabels: "teleport.dev/origin=x"}, []string{dbspec.AnnotationLabels}},
		{map[string]string{dbspec.AnnotationLabels: "teleport.internal/x=y"}, []string{dbspec.AnnotationLabels}},
		{map[string]string{dbspec.AnnotationName: "---"}, []string{dbspec.AnnotationName}},
		{map[string]string{dbspec.AnnotationName: "Billing_DB"}, []string{dbspec.AnnotationName}},                    // never rewritten
		{map[string]string{dbspec.AnnotationName: "ns-9lives-"}, []string{dbspec.AnnotationName}},                    // not a Teleport name
		{map[string]string{dbspec.AnnotationName: "日本語-db"}, []string{dbspec.AnnotationName}},                        // would have become "db"
		{map[string]string{dbspec.AnnotationName: "other-db"}, []string{dbspec.AnnotationName}},                      // another namespace's names
		{map[string]string{dbspec.AnnotationName: "ns-" + strings.Repeat("x", 58)}, []string{dbspec.AnnotationName}}, // <name>-rw over 63
		{map[string]string{dbspec.AnnotationLabels: "env=dev"}, []string{dbspec.AnnotationLabels}},                   // not in the policy
		{map[string]string{dbspec.AnnotationLabels: "tier=gold,owner=me"}, []string{dbspec.AnnotationLabels}},        // one key not in it
		{map[string]string{dbspec.AnnotationKeep: "yes"}, []string{dbspec.AnnotationKeep}},
		{map[string]string{dbspec.AnnotationAutoUsers: "yes"}, []string{dbspec.AnnotationAutoUsers}},
		{map[string]string{dbspec.AnnotationAutoUserRoles: "teleport_read"}, []string{dbspec.AnnotationAutoUserRoles}}, // without auto-users
		{map[string]string{dbspec.AnnotationAutoUsers: "true", dbspec.AnnotationAutoUserRoles: "pg_read_server_files"}, []string{dbspec.AnnotationAutoUserRoles}},
		{map[string]string{dbspec.AnnotationAutoUsers: "true", dbspec.AnnotationAutoUserRoles: "analyst,postgres"}, []string{dbspec.AnnotationAutoUserRoles}},
		{map[string]string{dbspec.AnnotationAutoUsers: "true", dbspec.AnnotationAutoUserRoles: "teleport_admin"}, []string{dbspec.AnnotationAutoUserRoles}},
		{map[string]string{dbspec.AnnotationAutoUsers: "true", dbspec.AnnotationAutoUserRoles: "app"}, []string{dbspec.AnnotationAutoUserRoles}}, // owns the app database
		{map[string]string{dbspec.AnnotationAutoUsers: "true", dbspec.AnnotationAutoUserRoles: "Analyst"}, []string{dbspec.AnnotationAutoUserRoles}},
		{map[string]string{dbspec.AnnotationReadRole: "teleport_admin"}, []string{dbspec.AnnotationReadRole}},
		{map[string]string{dbspec.AnnotationEndpoints: "x", dbspec.AnnotationLabels: "y", dbspec.AnnotationKeep: "no"}, []string{dbspec.AnnotationEndpoints, dbspec.AnnotationLabels, dbspec.AnnotationKeep}},
	}
	for _, tt := range tests {
		_, err := ParseAnnotations(opts, cluster("ns", "c", 1, tt.ann))
		var iae *dbspec.InvalidAnnotationError
		if !errors.As(err, &iae) {
			t.Errorf("%v: want dbspec.InvalidAnnotationError, got %v", tt.ann, err)
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
		{"1 instance: rw", cluster("app", "pg", 1, map[string]string{dbspec.AnnotationRegister: "true"}), []string{"prod-app-pg-rw"}},
		{"3 instances: rw + ro", cluster("app", "pg", 3, map[string]string{dbspec.AnnotationRegister: "true"}), []string{"prod-app-pg-rw", "prod-app-pg-ro"}},
		{"explicit endpoints", cluster("app", "pg", 3, map[string]string{dbspec.AnnotationEndpoints: "r, rw"}), []string{"prod-app-pg-rw", "prod-app-pg-r"}},
		{"name as written", cluster("app", "pg", 1, map[string]string{dbspec.AnnotationName: "app-Billing"}), []string{"app-Billing-rw"}},
		{"the namespace itself", cluster("app", "pg", 1, map[string]string{dbspec.AnnotationName: "app"}), []string{"app-rw"}},
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
				ep := db.GetStaticLabels()[dbspec.LabelEndpoint]
				if db.GetURI() != tt.c.Name+"-"+ep+"."+tt.c.Namespace+".svc.cluster.local:5432" {
					t.Errorf("uri %s", db.GetURI())
				}
				if db.GetProtocol() != "postgres" || db.GetTLS().Mode != types.DatabaseTLSMode_VERIFY_FULL || db.GetTLS().CACert != string(ca) {
					t.Errorf("protocol %s tls %+v", db.GetProtocol(), db.GetTLS())
				}
				l := db.GetStaticLabels()
				want := map[string]string{"env": "prod", "team": "platform", dbspec.LabelManagedBy: dbspec.ManagedByValue, dbspec.LabelKubeCluster: "prod",
					dbspec.LabelNamespace: "app", dbspec.LabelCluster: "pg", dbspec.LabelClusterUID: "uid-pg", dbspec.LabelSQLType: map[bool]string{true: "primary", false: "standby"}[ep == "rw"]}
				for k, v := range want {
					if l[k] != v {
						t.Errorf("label %s=%q, want %q", k, l[k], v)
					}
				}
				if !OwnedByCluster(db, opts, tt.c) || !dbspec.OwnedBy(db, opts) {
					t.Error("a desired db must be owned by its Cluster")
				}
				if dbspec.OwnedBy(db, dbspec.Options{KubeCluster: "other", KubeClusterID: "id-prod"}) {
					t.Error("owned by another kube cluster")
				}
				twin := dbspec.Options{KubeCluster: "prod", KubeClusterID: "id-twin"} // the same name, another cluster
				if dbspec.OwnedBy(db, twin) || !dbspec.IdentityConflict(db, twin) || dbspec.IdentityConflict(db, opts) || dbspec.Legacy(db) {
					t.Error("a Kubernetes cluster of the same --kube-cluster name must not own it, and must see the conflict")
				}
			}
		})
	}
}

func TestUserLabelsMergeOverStatic(t *testing.T) {
	dbs, err := DesiredDatabases(opts, cluster("a", "b", 1, map[string]string{dbspec.AnnotationLabels: " team=db , tier=gold "}), testCA(t, "x"))
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
	for _, o := range []dbspec.Options{{KubeCluster: "k1"}, {KubeCluster: "k2"}, {KubeCluster: "k1-a"}} {
		for _, ns := range []string{"a", "b", "a-b", "b-pg"} {
			for _, name := range []string{"pg", "b-pg", "pg-rw", long + "x1", long + "x2"} {
				o.Domain = "cluster.local"
				dbs, err := DesiredDatabases(o, cluster(ns, name, 3, nil), ca)
				if err != nil {
					t.Fatal(err)
				}
				for _, db := range dbs {
					n := db.GetName()
					if !validDBName(n) {
						t.Errorf("invalid name %q (%d chars)", n, len(n))
					}
					id := o.KubeCluster + "/" + ns + "/" + name + "/" + db.GetStaticLabels()[dbspec.LabelEndpoint]
					if !strings.HasSuffix(n, "-"+db.GetStaticLabels()[dbspec.LabelEndpoint]) {
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
	c := cluster("app", "pg", 1, map[string]string{dbspec.AnnotationRegister: "true"})
	dbs, err := DesiredDatabases(opts, c, testCA(t, "x"))
	if err != nil {
		t.Fatal(err)
	}
	old := dbs[0].Copy()
	l := old.GetStaticLabels()
	delete(l, dbspec.LabelKubeClusterID)
	old.SetStaticLabels(l)
	if !OwnedByCluster(old, opts, c) || !dbspec.Legacy(old) || dbspec.IdentityConflict(old, opts) {
		t.Fatal("a legacy db resource must be adopted by its Cluster")
	}
	create, update, remove := dbspec.Diff(dbs, []types.Database{old})
	if len(create)+len(remove) != 0 || len(update) != 1 || update[0].GetName() != old.GetName() {
		t.Fatalf("upgrade must update in place, never delete and re-create: create %d update %d remove %d", len(create), len(update), len(remove))
	}
}

func TestLabelPolicy(t *testing.T) {
	p, err := dbspec.ParseLabelPolicy("team, env=dev|staging")
	if err != nil || p["team"] != nil || strings.Join(p["env"], "|") != "dev|staging" {
		t.Fatalf("%v %v", p, err)
	}
	o := opts
	o.AnnotationLabels = p
	for ann, ok := range map[string]bool{"team=x": true, "env=dev": true, "env=prod": false, "tier=gold": false} {
		_, err := ParseAnnotations(o, cluster("ns", "c", 1, map[string]string{dbspec.AnnotationLabels: ann}))
		if (err == nil) != ok {
			t.Errorf("%s: %v", ann, err)
		}
	}
	for _, bad := range []string{"env=", dbspec.LabelManagedBy, "a,a", "bad key"} {
		if _, err := dbspec.ParseLabelPolicy(bad); err == nil {
			t.Errorf("policy %q accepted", bad)
		}
	}
	o.AnyName = true
	if _, err := ParseAnnotations(o, cluster("ns", "c", 1, map[string]string{dbspec.AnnotationName: "other-db"})); err != nil {
		t.Errorf("--name-policy=any: %v", err)
	}
}

func TestServerCAChecked(t *testing.T) {
	c := cluster("a", "b", 1, nil)
	key := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte("k")})
	for name, ca := range map[string][]byte{"empty": nil, "garbage": []byte("nope"), "with a key": append(testCA(t, "x"), key...)} {
		if _, err := DesiredDatabases(opts, c, ca); !errors.Is(err, dbspec.ErrNoServerCA) {
			t.Errorf("%s: want dbspec.ErrNoServerCA, got %v", name, err)
		}
	}
}

func TestNeedsUpdateAndDiff(t *testing.T) {
	ca1, ca2 := testCA(t, "1"), testCA(t, "2")
	c := cluster("a", "pg", 3, map[string]string{dbspec.AnnotationLabels: "t=1"})
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
	if dbspec.NeedsUpdate(desired[0], actual) {
		t.Error("server-set fields caused an update")
	}
	if got := dbspec.ForUpdate(desired[0], actual).GetRevision(); got != "rev-7" {
		t.Errorf("revision not carried: %q", got)
	}
	for name, mutate := range map[string]func(types.Database){
		"ca":    func(d types.Database) { d.SetCA(string(ca2)) },
		"uri":   func(d types.Database) { d.SetURI("x:1") },
		"label": func(d types.Database) { l := d.GetStaticLabels(); l["t"] = "2"; d.SetStaticLabels(l) },
	} {
		a := desired[0].Copy()
		mutate(a)
		if !dbspec.NeedsUpdate(desired[0], a) {
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
	create, update, remove := dbspec.Diff(d1, desired)
	if len(create) != 0 || len(update) != 0 || strings.Join(names(remove), ",") != "prod-a-pg-ro" {
		t.Fatalf("3->1: create %v update %v remove %v", names(create), names(update), names(remove))
	}
	// Renamed prefix: both new created, both old removed; CA change: updates.
	c2 := c.DeepCopy()
	c2.Annotations[dbspec.AnnotationName] = "a-new"
	d2, err := DesiredDatabases(opts, c2, ca1)
	if err != nil {
		t.Fatal(err)
	}
	create, update, remove = dbspec.Diff(d2, desired)
	if strings.Join(names(create), ",") != "a-new-ro,a-new-rw" || len(update) != 0 || len(remove) != 2 {
		t.Fatalf("rename: create %v update %v remove %v", names(create), names(update), names(remove))
	}
	d3, _ := DesiredDatabases(opts, c, ca2)
	create, update, remove = dbspec.Diff(d3, desired)
	if len(create) != 0 || len(update) != 2 || len(remove) != 0 {
		t.Fatalf("ca change: create %v update %v remove %v", names(create), names(update), names(remove))
	}
	// Steady state: nothing.
	create, update, remove = dbspec.Diff(desired, desired)
	if len(create)+len(update)+len(remove) != 0 {
		t.Fatal("steady state must plan no writes")
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []dbspec.Options{{}, {KubeCluster: "Bad_Name"}, {KubeCluster: "ok", StaticLabels: map[string]string{dbspec.LabelManagedBy: "x"}}} {
		if err := o.Validate(); err == nil {
			t.Errorf("%+v: want an error", o)
		}
	}
	if err := (&dbspec.Options{KubeCluster: "ok"}).Validate(); err == nil {
		t.Error("no identity: want an error")
	}
	o := dbspec.Options{KubeCluster: "ok", KubeClusterID: "3f2a9c1e-0000-4000-8000-000000000001"}
	if err := o.Validate(); err != nil || o.Domain != "cluster.local" {
		t.Fatalf("%v %q", err, o.Domain)
	}
}
