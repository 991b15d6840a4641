package controllers

import (
	"context"
	"fmt"
	"slices"
	"testing"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnpg-teleport/cnpg-teleport/clusterspec"
	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
	"github.com/cnpg-teleport/cnpg-teleport/pgrules"
)

// applyRole plays CNPG's instance manager for a DatabaseRole: status
// applied for its current generation.
func (b *bed) applyRole(name string) {
	b.t.Helper()
	b.eventually("DatabaseRole "+name+" applied", func() (bool, string) {
		var r cnpgv1.DatabaseRole
		if err := b.c.Get(context.Background(), client.ObjectKey{Namespace: b.ns, Name: name}, &r); err != nil {
			return false, err.Error()
		}
		r.Status.Applied, r.Status.ObservedGeneration = ptr(true), r.Generation
		err := b.c.Status().Update(context.Background(), &r)
		return err == nil, fmt.Sprint(err)
	})
}

// applyDatabase is applyRole for a Database and its schemas.
func (b *bed) applyDatabase(name string) {
	b.t.Helper()
	b.eventually("Database "+name+" applied", func() (bool, string) {
		var d cnpgv1.Database
		if err := b.c.Get(context.Background(), client.ObjectKey{Namespace: b.ns, Name: name}, &d); err != nil {
			return false, err.Error()
		}
		d.Status.Applied, d.Status.ObservedGeneration = ptr(true), d.Generation
		d.Status.Schemas = nil
		for _, s := range d.Spec.Schemas {
			d.Status.Schemas = append(d.Status.Schemas, cnpgv1.DatabaseObjectStatus{Name: s.Name, Applied: true})
		}
		err := b.c.Status().Update(context.Background(), &d)
		return err == nil, fmt.Sprint(err)
	})
}

func (b *bed) adminUser(db string) string {
	d, ok := b.f.Stored(db)
	if !ok {
		return "<none>"
	}
	return d.GetAdminUser().Name
}

// TestEnvAutoUsers: the admin and its schema through CNPG's objects,
// admin_user only once CNPG runs both, a Database object of the user's
// wins, and opting out disables the admin before letting go of it.
func TestEnvAutoUsers(t *testing.T) {
	b, _ := newBed(t, bedOptions{})
	ctx := context.Background()
	rw, ro := dbName(b.ns, "pg", "rw"), dbName(b.ns, "pg", "ro")
	ann := registerAnn()
	ann[dbspec.AnnotationAutoUsers] = "true"
	b.newCluster("pg", 2, ann)
	b.waitDBs("pg", rw, ro)

	adminName := clusterspec.DatabaseRoleName(&cnpgv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "pg"}}, pgrules.AdminUser)
	var admin cnpgv1.DatabaseRole
	b.eventually("the admin's DatabaseRole", func() (bool, string) {
		err := b.c.Get(ctx, client.ObjectKey{Namespace: b.ns, Name: adminName}, &admin)
		return err == nil, fmt.Sprint(err)
	})
	if rc := admin.Spec.RoleConfiguration; rc.Name != pgrules.AdminUser || !rc.Login || !rc.CreateRole || rc.Superuser || !rc.DisablePassword ||
		admin.Spec.ReclaimPolicy != cnpgv1.DatabaseRoleReclaimDelete {
		t.Fatalf("admin DatabaseRole: %+v", admin.Spec)
	}
	var db cnpgv1.Database
	b.eventually("the admin's Database", func() (bool, string) {
		err := b.c.Get(ctx, client.ObjectKey{Namespace: b.ns, Name: "pg-teleport-app"}, &db)
		return err == nil, fmt.Sprint(err)
	})
	if db.Spec.Name != "app" || db.Spec.Owner != "app" || db.Spec.ReclaimPolicy != cnpgv1.DatabaseReclaimRetain || !clusterspec.HasAdminSchema(&db) {
		t.Fatalf("admin Database: %+v", db.Spec)
	}
	c, _ := b.get("pg")
	if !slices.Contains(c.Spec.PostgresConfiguration.PgHBA, pgrules.AutoUsersHBALine()) {
		t.Fatalf("pg_hba %q", c.Spec.PostgresConfiguration.PgHBA)
	}
	// Not before CNPG runs both.
	b.applyRole(adminName)
	b.event("pg", ReasonAutoUsersPending, "Database pg-teleport-app not applied yet")
	if got := b.adminUser(rw); got != "" {
		t.Fatalf("admin_user %q before the schema is applied", got)
	}
	b.applyDatabase("pg-teleport-app")
	b.event("pg", ReasonAutoUsersReady, "teleport_read, teleport_write")
	b.eventually("admin_user on rw", func() (bool, string) { got := b.adminUser(rw); return got == pgrules.AdminUser, got })
	if got := b.adminUser(ro); got != "" {
		t.Fatalf("admin_user %q on ro: a replica cannot create users", got)
	}

	// A Database object of the user's for app wins; ours goes (retained).
	theirs := &cnpgv1.Database{
		ObjectMeta: metav1.ObjectMeta{Namespace: b.ns, Name: "app-db"},
		Spec:       cnpgv1.DatabaseSpec{ClusterRef: corev1.LocalObjectReference{Name: "pg"}, Name: "app", Owner: "app"},
	}
	if err := b.c.Create(ctx, theirs); err != nil {
		t.Fatal(err)
	}
	b.event("pg", ReasonSchemaMissing, "to your Database app-db (database app)")
	// Another application database of the user's, without the schema, is named too.
	analytics := &cnpgv1.Database{
		ObjectMeta: metav1.ObjectMeta{Namespace: b.ns, Name: "analytics-db"},
		Spec:       cnpgv1.DatabaseSpec{ClusterRef: corev1.LocalObjectReference{Name: "pg"}, Name: "analytics", Owner: "app"},
	}
	if err := b.c.Create(ctx, analytics); err != nil {
		t.Fatal(err)
	}
	b.event("pg", ReasonSchemaMissing, "analytics-db (database analytics)")
	b.eventually("ours gone", func() (bool, string) {
		err := b.c.Get(ctx, client.ObjectKey{Namespace: b.ns, Name: "pg-teleport-app"}, &cnpgv1.Database{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	if err := b.c.Get(ctx, client.ObjectKeyFromObject(theirs), theirs); err != nil {
		t.Fatal(err)
	}
	theirs.Spec.Schemas = []cnpgv1.SchemaSpec{clusterspec.AdminSchema()}
	if err := b.c.Update(ctx, theirs); err != nil {
		t.Fatal(err)
	}
	b.applyDatabase("app-db")
	if err := b.c.Get(ctx, client.ObjectKeyFromObject(theirs), theirs); err != nil {
		t.Fatal(err)
	}
	if len(theirs.OwnerReferences) != 0 || len(theirs.Labels) != 0 {
		t.Fatalf("the user's Database was touched: %+v", theirs.ObjectMeta)
	}

	// Opt out: the admin is disabled first, then let go of, never dropped.
	b.patchCluster("pg", func(c *cnpgv1.Cluster) { delete(c.Annotations, dbspec.AnnotationAutoUsers) })
	b.eventually("admin disabled", func() (bool, string) {
		if err := b.c.Get(ctx, client.ObjectKey{Namespace: b.ns, Name: adminName}, &admin); err != nil {
			return false, err.Error()
		}
		rc := admin.Spec.RoleConfiguration
		return !rc.Login && !rc.CreateRole && admin.Spec.ReclaimPolicy == cnpgv1.DatabaseRoleReclaimRetain, fmt.Sprintf("%+v", admin.Spec)
	})
	b.eventually("admin_user off rw", func() (bool, string) { got := b.adminUser(rw); return got == "", got })
	// The object stays until CNPG has applied the change.
	if err := b.c.Get(ctx, client.ObjectKey{Namespace: b.ns, Name: adminName}, &admin); err != nil {
		t.Fatalf("admin let go of before CNPG disabled it: %v", err)
	}
	b.applyRole(adminName)
	b.event("pg", ReasonAutoUsersRemoved, "DROP SCHEMA teleport_admin CASCADE")
	b.eventually("admin let go of", func() (bool, string) {
		err := b.c.Get(ctx, client.ObjectKey{Namespace: b.ns, Name: adminName}, &admin)
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	c, _ = b.get("pg")
	if slices.Contains(c.Spec.PostgresConfiguration.PgHBA, pgrules.AutoUsersHBALine()) {
		t.Fatalf("pg_hba %q", c.Spec.PostgresConfiguration.PgHBA)
	}
	if err := b.c.Get(ctx, client.ObjectKeyFromObject(theirs), theirs); err != nil {
		t.Fatalf("the user's Database: %v", err)
	}
}
