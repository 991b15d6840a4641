package clusterspec

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"slices"
	"strings"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cnpg-teleport/cnpg-teleport/pgrules"
)

// AdminRole is the admin's DatabaseRole content: login by certificate,
// CREATEROLE (it creates Teleport's users and grants them roles).
func AdminRole() Role {
	return Role{Name: pgrules.AdminUser, CreateRole: true}
}

// DisabledAdminRole is the admin left in PostgreSQL when auto-users are
// turned off: it cannot log in nor create roles, and is retained (CNPG
// cannot drop it while it owns Teleport's procedures).
func DisabledAdminRole() Role {
	return Role{Name: pgrules.AdminUser, NoLogin: true, Retain: true}
}

// AppDatabase is the Cluster's application database and its owner, from
// how it was bootstrapped (CNPG's default: app, owned by app).
func AppDatabase(c *cnpgv1.Cluster) (name, owner string) {
	name, owner = "app", ""
	if b := c.Spec.Bootstrap; b != nil {
		switch {
		case b.InitDB != nil:
			name, owner = b.InitDB.Database, b.InitDB.Owner
		case b.Recovery != nil:
			name, owner = b.Recovery.Database, b.Recovery.Owner
		case b.PgBaseBackup != nil:
			name, owner = b.PgBaseBackup.Database, b.PgBaseBackup.Owner
		}
	}
	if name == "" {
		name = "app"
	}
	if owner == "" {
		owner = name // CNPG's default
	}
	return name, owner
}

// AdminSchema is the schema the admin owns in a database, on its search
// path ("$user"): where Teleport installs its procedures (PostgreSQL 15
// gives PUBLIC no CREATE on schema public).
func AdminSchema() cnpgv1.SchemaSpec {
	return cnpgv1.SchemaSpec{DatabaseObjectSpec: cnpgv1.DatabaseObjectSpec{Name: pgrules.AdminUser, Ensure: cnpgv1.EnsurePresent}, Owner: pgrules.AdminUser}
}

// HasAdminSchema reports whether a Database object declares the admin's
// schema, present and owned by the admin.
func HasAdminSchema(d *cnpgv1.Database) bool {
	return slices.ContainsFunc(d.Spec.Schemas, func(s cnpgv1.SchemaSpec) bool {
		return s.Name == pgrules.AdminUser && s.Owner == pgrules.AdminUser && s.Ensure != cnpgv1.EnsureAbsent
	})
}

// AdminSchemaApplied reports whether CNPG has applied the Database object
// as it is now, its admin schema included.
func AdminSchemaApplied(d *cnpgv1.Database) bool {
	st := d.Status
	if st.Applied == nil || !*st.Applied || st.ObservedGeneration != d.Generation {
		return false
	}
	return slices.ContainsFunc(st.Schemas, func(s cnpgv1.DatabaseObjectStatus) bool { return s.Name == pgrules.AdminUser && s.Applied })
}

// RoleApplied reports whether CNPG has applied the DatabaseRole as it is now.
func RoleApplied(r *cnpgv1.DatabaseRole) bool {
	st := r.Status
	return st.Applied != nil && *st.Applied && st.ObservedGeneration == r.Generation
}

// AdminDatabase is the Database object that gives the admin its schema in
// an existing database: retained on deletion (deleting it never drops the
// database), owner as the Cluster declares it (CNPG runs ALTER DATABASE
// OWNER TO with it).
func AdminDatabase(c *cnpgv1.Cluster, db, owner string, labels map[string]string) *cnpgv1.Database {
	return &cnpgv1.Database{
		TypeMeta: metav1.TypeMeta{APIVersion: cnpgv1.SchemeGroupVersion.String(), Kind: "Database"},
		ObjectMeta: metav1.ObjectMeta{
			Namespace: c.Namespace, Name: AdminDatabaseName(c, db), Labels: labels,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: cnpgv1.SchemeGroupVersion.String(), Kind: cnpgv1.ClusterKind, Name: c.Name, UID: c.UID,
			}},
		},
		Spec: cnpgv1.DatabaseSpec{
			ClusterRef:    corev1.LocalObjectReference{Name: c.Name},
			Ensure:        cnpgv1.EnsurePresent,
			Name:          db,
			Owner:         owner,
			ReclaimPolicy: cnpgv1.DatabaseReclaimRetain,
			Schemas:       []cnpgv1.SchemaSpec{AdminSchema()},
		},
	}
}

var dnsClean = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// AdminDatabaseName is <cluster>-teleport-<db>, with a hash in place of a
// database name that is not a DNS label, shortened to 253.
func AdminDatabaseName(c *cnpgv1.Cluster, db string) string {
	part := strings.ReplaceAll(db, "_", "-")
	if !dnsClean.MatchString(part) || len(c.Name)+len("-teleport-")+len(part) > 253 {
		sum := sha256.Sum256([]byte(db))
		part = hex.EncodeToString(sum[:4])
	}
	return c.Name + "-teleport-" + part
}
