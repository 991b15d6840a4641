package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnpg-teleport/cnpg-teleport/clusterspec"
	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
	"github.com/cnpg-teleport/cnpg-teleport/pgrules"
)

// Event reasons of automatic user provisioning.
const (
	ReasonAutoUsersReady   = "AutoUsersReady"
	ReasonAutoUsersPending = "AutoUsersPending"
	ReasonAutoUsersRemoved = "AutoUsersRemoved"
	ReasonSchemaMissing    = "AutoUsersSchemaMissing"
)

// autoUsers provisions, through CNPG, what Teleport's automatic user
// provisioning needs on a Cluster that asks for it: the admin (a
// DatabaseRole: LOGIN, CREATEROLE) and its schema in the application
// database (a Database object). Once CNPG runs both, spec.AdminUser is set,
// so the rw db resource names the admin: never before, so no session is
// sent to an admin PostgreSQL does not have. On a Cluster that no longer
// asks, it disables the admin (done reports when that is finished).
// hba reports whether the Cluster's pg_hba needs the auto-users line.
func (r *ClusterReconciler) autoUsers(ctx context.Context, c *cnpgv1.Cluster, spec *dbspec.Spec) (hba bool, err error) {
	if !spec.AutoUsers {
		_, err := r.disableAutoUsers(ctx, c)
		return false, err
	}
	role, err := r.ensureRole(ctx, c, clusterspec.DatabaseRole(c, clusterspec.AdminRole(), objectLabels(c)))
	if err != nil {
		return true, err
	}
	schema, schemaWhy, err := r.ensureAdminSchema(ctx, c)
	if err != nil {
		return true, err
	}
	if clusterspec.RoleApplied(role) && schema {
		spec.AdminUser = pgrules.AdminUser
		r.pending.forget(c.UID + "/auto")
		if ready, _ := r.autoReady.get(c.UID); !ready {
			r.autoReady.set(c.UID, true)
			r.auto.clear(c)
			db, _ := clusterspec.AppDatabase(c)
			r.Recorder.Eventf(c, nil, corev1.EventTypeNormal, ReasonAutoUsersReady, "AutoUsers",
				"admin %s (LOGIN, CREATEROLE) and its schema in database %s are in PostgreSQL: the rw db resource names it as admin_user; Teleport may grant %s",
				pgrules.AdminUser, db, strings.Join(spec.GrantRoles, ", "))
		}
		return true, nil
	}
	r.autoReady.set(c.UID, false)
	why := schemaWhy
	if !clusterspec.RoleApplied(role) {
		why = fmt.Sprintf("DatabaseRole %s not applied yet (%s)", role.Name, orNone(role.Status.Message))
	}
	if r.pendingFor(c.UID+"/auto") >= trustNoteAfter {
		r.auto.note(r.Recorder, c, ReasonAutoUsersPending, "AutoUsers", "admin_user is set once CNPG runs the admin and its schema: %s", why)
	}
	return true, nil
}

func orNone(s string) string {
	if s == "" {
		return "no message"
	}
	return s
}

// ensureAdminSchema gives the admin its schema in the application
// database. A Database object of the user's for that database wins: CNPG
// lets one object manage a database, so ours is deleted (retained: nothing
// is dropped), and theirs must declare the schema. So must every other
// Database object of the user's for the Cluster (their application
// databases too): a Warning names those that do not.
func (r *ClusterReconciler) ensureAdminSchema(ctx context.Context, c *cnpgv1.Cluster) (ready bool, why string, err error) {
	db, owner := clusterspec.AppDatabase(c)
	want := clusterspec.AdminDatabase(c, db, owner, objectLabels(c))
	users, err := r.usersDatabases(ctx, c)
	if err != nil {
		return false, "", err
	}
	var theirs *cnpgv1.Database
	for _, d := range users {
		if d.Spec.Name == db && theirs == nil {
			theirs = d
		}
		if !clusterspec.HasAdminSchema(d) {
			// An action per object: client-go folds Events of one reason
			// and action into a series that shows the first note only.
			r.auto.warn(r.Recorder, c, ReasonSchemaMissing, "CheckSchema "+d.Name,
				"add schemas: [{name: %s, owner: %s}] to your Database %s (database %s): Teleport installs its procedures in the admin's schema of the database a user connects to (PostgreSQL 15 gives nobody CREATE on public)",
				pgrules.AdminUser, pgrules.AdminUser, d.Name, d.Spec.Name)
		}
	}
	if theirs != nil {
		if err := r.deleteAdminDatabases(ctx, c); err != nil {
			return false, "", err
		}
		if !clusterspec.HasAdminSchema(theirs) {
			return false, fmt.Sprintf("Database %s lacks the schema %s", theirs.Name, pgrules.AdminUser), nil
		}
		return clusterspec.AdminSchemaApplied(theirs), fmt.Sprintf("Database %s not applied yet (%s)", theirs.Name, orNone(theirs.Status.Message)), nil
	}
	var have cnpgv1.Database
	err = r.Client.Get(ctx, client.ObjectKeyFromObject(want), &have)
	if apierrors.IsNotFound(err) {
		if err = r.Client.Create(ctx, want); err == nil {
			return false, "Database " + want.Name + " created", nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return false, "", fmt.Errorf("database %s: %w", want.Name, err)
		}
		err = r.APIReader.Get(ctx, client.ObjectKeyFromObject(want), &have)
	}
	switch {
	case err != nil:
		return false, "", fmt.Errorf("database %s: %w", want.Name, err)
	case !ownedBy(&have, c):
		r.warned.warn(r.Recorder, c, ReasonObjectConflict, "AutoUsers", "Database %s exists and is not ours: left untouched", want.Name)
		return false, "", fmt.Errorf("database %s: %w", want.Name, errNotOurs)
	}
	next := mergeAdminDatabase(have.Spec, want.Spec)
	if !apiequality.Semantic.DeepEqual(have.Spec, next) {
		have.Spec = next
		if err := r.Client.Update(ctx, &have); err != nil {
			return false, "", fmt.Errorf("database %s: %w", want.Name, err)
		}
		return false, "Database " + want.Name + " updated", nil
	}
	return clusterspec.AdminSchemaApplied(&have), fmt.Sprintf("Database %s not applied yet (%s)", have.Name, orNone(have.Status.Message)), nil
}

// mergeAdminDatabase is have with the fields AdminDatabase sets taken from
// want, so what CNPG defaults stays (no write every pass).
func mergeAdminDatabase(have, want cnpgv1.DatabaseSpec) cnpgv1.DatabaseSpec {
	out := *have.DeepCopy()
	out.ClusterRef, out.Ensure, out.Name, out.Owner, out.ReclaimPolicy = want.ClusterRef, want.Ensure, want.Name, want.Owner, want.ReclaimPolicy
	out.Schemas = slices.Clone(want.Schemas)
	return out
}

// usersDatabases are the Database objects that are not ours and manage a
// database of the Cluster. The cache holds only ours: this reads the namespace.
func (r *ClusterReconciler) usersDatabases(ctx context.Context, c *cnpgv1.Cluster) ([]*cnpgv1.Database, error) {
	var list cnpgv1.DatabaseList
	if err := r.APIReader.List(ctx, &list, client.InNamespace(c.Namespace)); err != nil {
		return nil, fmt.Errorf("databases: %w", err)
	}
	var out []*cnpgv1.Database
	for i := range list.Items {
		d := &list.Items[i]
		if d.Spec.ClusterRef.Name == c.Name && !ownedBy(d, c) && d.Spec.Ensure != cnpgv1.EnsureAbsent {
			out = append(out, d)
		}
	}
	return out, nil
}

// deleteAdminDatabases deletes our Database objects of the Cluster. They
// are retained (databaseReclaimPolicy retain): CNPG drops nothing.
func (r *ClusterReconciler) deleteAdminDatabases(ctx context.Context, c *cnpgv1.Cluster) error {
	var list cnpgv1.DatabaseList
	if err := r.Client.List(ctx, &list, client.InNamespace(c.Namespace), client.MatchingLabels(objectLabels(c))); err != nil {
		return fmt.Errorf("databases: %w", err)
	}
	for i := range list.Items {
		d := &list.Items[i]
		if !ownedBy(d, c) {
			continue
		}
		if d.Spec.ReclaimPolicy != cnpgv1.DatabaseReclaimRetain { // never: ours are built retained
			return fmt.Errorf("database %s: not retained, left for a person to delete", d.Name)
		}
		if err := r.Client.Delete(ctx, d); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("database %s: %w", d.Name, err)
		}
	}
	return nil
}

// disableAutoUsers turns the admin of a Cluster that no longer asks for
// auto-users into one that cannot log in nor create roles, and once CNPG
// runs that, lets go of it and of its schema's Database object, both
// retained: the schema holds Teleport's procedures, which CNPG cannot drop
// (it has no DROP SCHEMA … CASCADE), and a role that owns objects cannot be
// dropped. done reports that nothing of ours is left.
func (r *ClusterReconciler) disableAutoUsers(ctx context.Context, c *cnpgv1.Cluster) (done bool, err error) {
	var have cnpgv1.DatabaseRole
	key := client.ObjectKey{Namespace: c.Namespace, Name: clusterspec.DatabaseRoleName(c, pgrules.AdminUser)}
	err = r.Client.Get(ctx, key, &have)
	if apierrors.IsNotFound(err) || (err == nil && !ownedBy(&have, c)) {
		r.autoReady.forget(c.UID)
		return true, r.deleteAdminDatabases(ctx, c)
	}
	if err != nil {
		return false, fmt.Errorf("databaserole %s: %w", key.Name, err)
	}
	r.autoReady.forget(c.UID)
	// An update leaves the status of the generation before: not applied
	// until CNPG's status change, which wakes us (we own the object).
	role, err := r.ensureRole(ctx, c, clusterspec.DatabaseRole(c, clusterspec.DisabledAdminRole(), objectLabels(c)))
	if err != nil {
		return false, err
	}
	if !clusterspec.RoleApplied(role) {
		if r.pendingFor(c.UID+"/auto") >= trustNoteAfter {
			r.auto.note(r.Recorder, c, ReasonAutoUsersPending, "DisableAdmin", "waiting for CNPG to disable %s: %s", pgrules.AdminUser, orNone(role.Status.Message))
		}
		return false, nil
	}
	if err := r.deleteAdminDatabases(ctx, c); err != nil {
		return false, err
	}
	if err := r.Client.Delete(ctx, role); client.IgnoreNotFound(err) != nil {
		return false, fmt.Errorf("databaserole %s: %w", key.Name, err)
	}
	r.pending.forget(c.UID + "/auto")
	r.auto.clear(c)
	db, _ := clusterspec.AppDatabase(c)
	r.Recorder.Eventf(c, nil, corev1.EventTypeNormal, ReasonAutoUsersRemoved, "AutoUsers",
		"admin_user removed; %s is NOLOGIN without CREATEROLE and stays in PostgreSQL with its schema in database %s and Teleport's users (NOLOGIN): the schema holds Teleport's procedures, which CNPG cannot drop. To remove them, a superuser runs DROP SCHEMA %s CASCADE in %s, then DROP ROLE %s",
		pgrules.AdminUser, db, pgrules.AdminUser, db, pgrules.AdminUser)
	return true, nil
}
