package dbspec

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/gravitational/teleport/api/types"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/cnpg-teleport/cnpg-teleport/internal/testpki"
	"github.com/cnpg-teleport/cnpg-teleport/pgrules"
)

// opts are the controller's options the fuzz targets parse under: static
// labels, and a policy that lets the annotation set a few keys.
var opts = Options{KubeCluster: "prod", KubeClusterID: "id-prod", StaticLabels: map[string]string{"env": "prod", "team": "platform"}, Domain: "cluster.local",
	AnnotationLabels: map[string][]string{"team": nil, "tier": nil, "t": nil}}

// The fuzz targets of the annotations, labels and names a tenant controls.
// `make test` runs each for a bounded time (`make fuzz`); what they found is
// kept in testdata/fuzz and runs as a plain test every time.

// FuzzParseAnnotations: any annotation values either parse into db
// resources Teleport accepts (names, labels, the pg_hba line: one line, the
// roles only, nothing a tenant may widen), or fail with InvalidAnnotation
// errors only; never a panic.
func FuzzParseAnnotations(f *testing.F) {
	f.Add("team-a-orders", "tier=gold", "rw,ro", "true", "", "", "Issuer/ca", "pg-pooler-rw", uint8(2))
	f.Add("", "", "", "", "reader", "writer", "", "", uint8(1))
	f.Add("other-ns", "", "", "", "", "", "", "", uint8(1))       // another tenant's names
	f.Add("team-a", "team=ops", "", "", "", "", "", "", uint8(2)) // over a static label, as the policy allows
	f.Add("other-ns", "team=x,team=y", "rw,rw", "True", "postgres", "postgres", "Vault/x", "Bad_Name", uint8(3))
	f.Add("team-a", "teleport.dev/origin=x", "r", "false", "app", "w\nhost all all 0.0.0.0/0 trust", "ClusterIssuer/", "a,,b", uint8(0))
	ca := testpki.Cert(f, "fuzz")
	f.Fuzz(func(t *testing.T, name, labels, endpoints, keep, readRole, writeRole, issuer, poolers string, instances uint8) {
		ann := map[string]string{AnnotationRegister: "true"}
		for k, v := range map[string]string{AnnotationName: name, AnnotationLabels: labels, AnnotationEndpoints: endpoints,
			AnnotationKeep: keep, AnnotationReadRole: readRole, AnnotationWriteRole: writeRole, AnnotationClientIssuer: issuer,
			AnnotationPoolers: poolers} {
			if v != "" {
				ann[k] = v
			}
		}
		c := Cluster{Namespace: "team-a", Name: "orders", UID: "uid-orders", Annotations: ann, Instances: int(instances % 4)}
		spec, err := ParseAnnotations(opts, c)
		if err != nil {
			var joined interface{ Unwrap() []error }
			if !errors.As(err, &joined) {
				t.Fatalf("not a joined error: %T %v", err, err)
			}
			for _, e := range joined.Unwrap() {
				var inv *InvalidAnnotationError
				if !errors.As(e, &inv) {
					t.Fatalf("an error that is not InvalidAnnotation: %T %v", e, e)
				}
				if _, ok := ann[inv.Annotation]; !ok && inv.Annotation != AnnotationReadRole && inv.Annotation != AnnotationWriteRole {
					t.Fatalf("blames annotation %s, which is not set", inv.Annotation)
				}
			}
			return
		}
		dbs, err := BuildDatabases(opts, c, spec, ca)
		if err != nil {
			t.Fatalf("parsed, then not buildable: %v", err)
		}
		if len(dbs) == 0 {
			t.Fatal("parsed, and no db resource")
		}
		for _, db := range dbs {
			if err := db.(*types.DatabaseV3).CheckAndSetDefaults(); err != nil {
				t.Fatalf("Teleport refuses %s: %v", db.GetName(), err)
			}
			checkDBName(t, db.GetName())
			if !strings.HasPrefix(db.GetName(), "team-a") && spec.Explicit {
				t.Fatalf("explicit name %s outside the namespace's names", db.GetName())
			}
			got := db.GetStaticLabels()
			for k, v := range map[string]string{LabelManagedBy: ManagedByValue, LabelKubeCluster: opts.KubeCluster,
				LabelKubeClusterID: opts.KubeClusterID, LabelNamespace: "team-a", LabelCluster: "orders", LabelClusterUID: "uid-orders"} {
				if got[k] != v {
					t.Fatalf("%s: ownership label %s=%q, want %q", db.GetName(), k, got[k], v)
				}
			}
			for k, v := range got {
				allowed, byPolicy := opts.AnnotationLabels[k]
				switch {
				case strings.HasPrefix(k, reservedPrefix), k == LabelSQLType:
				case opts.StaticLabels[k] != "" && !byPolicy:
					if v != opts.StaticLabels[k] {
						t.Fatalf("%s: static label %s=%q changed", db.GetName(), k, v)
					}
				case !byPolicy:
					t.Fatalf("%s: label %s set past the policy", db.GetName(), k)
				case len(allowed) > 0 && !slices.Contains(allowed, v):
					t.Fatalf("%s: label %s=%q past the policy's values", db.GetName(), k, v)
				}
			}
		}
		line := pgrules.HBALine(spec.ReadRole, spec.WriteRole)
		if strings.ContainsAny(line, "\r\n\x00") || len(strings.Fields(line)) != 7 {
			t.Fatalf("pg_hba line %q is not one rule of 7 fields", line)
		}
	})
}

// checkDBName: a Teleport db name (letters, digits, '-'; a letter first; not
// ending with '-'), at most 63 characters, a DNS label.
func checkDBName(t *testing.T, name string) {
	t.Helper()
	if !teleportName.MatchString(name) || len(name) > maxNameLength || len(validation.IsDNS1123Label(strings.ToLower(name))) > 0 {
		t.Fatalf("db name %q (%d characters) is not a valid Teleport db name", name, len(name))
	}
}

// FuzzParseLabels: what parses is a set of valid, unreserved keys with
// values, and parses back the same from its canonical form.
func FuzzParseLabels(f *testing.F) {
	for _, s := range []string{"", "a=b", " a = b , c=d ", "a=b,a=c", "=b", "a=", "cnpg-teleport.io/x=1", "sql_type=x", "k=v=w", ",", "a=b,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseLabels(s)
		if err != nil {
			return
		}
		var items []string
		for _, k := range slices.Sorted(maps.Keys(got)) {
			if err := checkLabelKey(k); err != nil {
				t.Fatalf("key %q accepted: %v", k, err)
			}
			if got[k] == "" || strings.Contains(got[k], ",") {
				t.Fatalf("value %q of %q", got[k], k)
			}
			items = append(items, k+"="+got[k])
		}
		again, err := ParseLabels(strings.Join(items, ","))
		if err != nil || !maps.Equal(got, again) {
			t.Fatalf("%q -> %v -> %v, %v", s, got, again, err)
		}
	})
}

// FuzzNames: a default name is a valid Teleport db name for any valid
// Kubernetes cluster, namespace and Cluster names, the same every time, and
// another for another Cluster or endpoint (namespaces and Kubernetes clusters
// sharing one Teleport never meet).
func FuzzNames(f *testing.F) {
	f.Add("prod", "a-b", "c", "prod", "a", "b-c")
	f.Add("prod", "team", strings.Repeat("x", 253), "prod", "team", strings.Repeat("x", 252))
	f.Add("k", "ns", "pg", "k", "ns", "pg")
	f.Add("eu-1", "Ünïcode", "pg", "eu", "1-ns", "pg")
	f.Fuzz(func(t *testing.T, kube1, ns1, name1, kube2, ns2, name2 string) {
		valid := func(kube, ns, name string) bool {
			return (&Options{KubeCluster: kube, KubeClusterID: "id"}).Validate() == nil &&
				len(validation.IsDNS1123Label(ns)) == 0 && len(validation.IsDNS1123Subdomain(name)) == 0
		}
		if !valid(kube1, ns1, name1) || !valid(kube2, ns2, name2) {
			return
		}
		seen := map[string]string{}
		for _, tuple := range [][3]string{{kube1, ns1, name1}, {kube2, ns2, name2}} {
			prefix := defaultPrefix(tuple[0], tuple[1], tuple[2])
			if prefix != defaultPrefix(tuple[0], tuple[1], tuple[2]) {
				t.Fatal("not deterministic")
			}
			for _, ep := range endpointOrder {
				n := databaseName(prefix, ep)
				checkDBName(t, n)
				id := strings.Join(tuple[:], "/") + "/" + ep
				if other, ok := seen[n]; ok && other != id {
					t.Fatalf("%s and %s are both named %s", other, id, n)
				}
				seen[n] = id
			}
		}
	})
}

// FuzzDatabaseNameFits: a long default name is cut to 63 characters and
// stays a valid name for any prefix the controller builds.
func FuzzDatabaseNameFits(f *testing.F) {
	f.Add(strings.Repeat("a", 80))
	f.Add("a-" + strings.Repeat("-b", 40))
	f.Fuzz(func(t *testing.T, raw string) {
		prefix := sanitize(raw)
		if prefix == "" {
			return
		}
		for _, ep := range endpointOrder {
			checkDBName(t, databaseName(prefix, ep))
		}
	})
}
