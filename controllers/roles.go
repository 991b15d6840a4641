package controllers

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	"github.com/gravitational/teleport/api/types"
	"github.com/gravitational/trace"

	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
	"github.com/cnpg-teleport/cnpg-teleport/pgrules"
)

// Event reasons of the Teleport role check.
const (
	ReasonRiskyTeleportRole = "RiskyTeleportRole"
	ReasonRoleCheckFailed   = "RoleCheckFailed"
)

// SystemUsers are the PostgreSQL users a Teleport user must never log in as:
// CNPG's fixed pg_hba rules let anyone with a trusted certificate of CN
// streaming_replica or cnpg_pooler_pgbouncer in (and postgres is the
// superuser); the auto-users admin has CREATEROLE and a cert rule of ours.
var SystemUsers = []string{"streaming_replica", "cnpg_pooler_pgbouncer", "postgres", pgrules.AdminUser}

// RiskyRole is a Teleport role that lets its holders reach one of our db
// resources as a system user (or any user: "*").
type RiskyRole struct {
	Role  string
	Users []string // "*" or system users, sorted
}

// RiskyRoles checks each role on its own (who holds which role is not the
// controller's to read): its allow rules must reach a db with one of the
// given label sets, and allow "*" or a system user as db_users that its own
// deny rules for that db do not take back. Trait templates ({{…}}) are not
// expanded: a role using them is not reported.
func RiskyRoles(roles []types.Role, dbLabels []map[string]string) []RiskyRole {
	var out []RiskyRole
	for _, role := range roles {
		users := map[string]bool{}
		for _, labels := range dbLabels {
			for _, u := range reachableSystemUsers(role, labels) {
				users[u] = true
			}
		}
		if len(users) > 0 {
			r := RiskyRole{Role: role.GetName()}
			for u := range users {
				r.Users = append(r.Users, u)
			}
			sort.Strings(r.Users)
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Role < out[j].Role })
	return out
}

// reachableSystemUsers is what role lets its holders log in as on a db with
// labels: each system user it names, and "*" when that reaches one, minus
// what its own deny rules take back.
func reachableSystemUsers(role types.Role, labels map[string]string) []string {
	if !matchLabels(role.GetDatabaseLabels(types.Allow), labels) {
		return nil
	}
	// Teleport (lib/services/role.go checkAccess): a deny rule whose
	// db_labels match denies the db outright, to every user; its db_users
	// deny those users on every db, whatever its labels.
	if matchLabels(role.GetDatabaseLabels(types.Deny), labels) {
		return nil
	}
	allowed := role.GetDatabaseUsers(types.Allow)
	denied := role.GetDatabaseUsers(types.Deny)
	if slices.Contains(denied, types.Wildcard) {
		return nil
	}
	wildcard := slices.Contains(allowed, types.Wildcard)
	var out []string
	open := false
	for _, u := range SystemUsers {
		if slices.Contains(denied, u) {
			continue
		}
		if slices.Contains(allowed, u) {
			out = append(out, u)
		}
		open = open || wildcard || slices.Contains(allowed, u)
	}
	if open && wildcard {
		out = append(out, types.Wildcard)
	}
	return out
}

// WideGrant is a Teleport role that creates users (create_db_user) on one
// of our db resources and grants them PostgreSQL roles (db_roles) beyond
// the Cluster's grantable ones.
type WideGrant struct {
	Role  string
	Roles []string // sorted
}

// WideGrants checks each role with create_db_user whose allow rules reach
// a db with one of the label sets (and whose deny labels do not): the
// db_roles it grants there, minus its own deny db_roles, must all be
// grantable. Teleport (lib/services/access_checker.go CheckDatabaseRoles)
// grants the union over a user's matching roles, so each role is checked
// on its own. Trait templates are not expanded and not reported.
func WideGrants(roles []types.Role, dbLabels []map[string]string, grantable []string) []WideGrant {
	var out []WideGrant
	for _, role := range roles {
		if role.GetCreateDatabaseUserMode() == types.CreateDatabaseUserMode_DB_USER_MODE_OFF {
			continue
		}
		reaches := slices.ContainsFunc(dbLabels, func(labels map[string]string) bool {
			return matchLabels(role.GetDatabaseLabels(types.Allow), labels) && !matchLabels(role.GetDatabaseLabels(types.Deny), labels)
		})
		if !reaches {
			continue
		}
		denied := role.GetDatabaseRoles(types.Deny)
		var wide []string
		for _, g := range role.GetDatabaseRoles(types.Allow) {
			if !slices.Contains(grantable, g) && !slices.Contains(denied, g) && !strings.Contains(g, "{{") && !slices.Contains(wide, g) {
				wide = append(wide, g)
			}
		}
		if len(wide) > 0 {
			sort.Strings(wide)
			out = append(out, WideGrant{Role: role.GetName(), Roles: wide})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Role < out[j].Role })
	return out
}

// matchLabels is Teleport's role label selector: every key must match; the
// key "*" with value "*" matches any db; a value "*" matches any value of
// the key; a value ^…$ is a regular expression. An empty selector matches nothing.
func matchLabels(selector types.Labels, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for key, values := range selector {
		if key == types.Wildcard {
			if !slices.Contains(values, types.Wildcard) {
				return false
			}
			continue
		}
		v, ok := labels[key]
		if !ok || !slices.ContainsFunc(values, func(want string) bool { return matchValue(want, v) }) {
			return false
		}
	}
	return true
}

func matchValue(want, v string) bool {
	if want == types.Wildcard || want == v {
		return true
	}
	if strings.HasPrefix(want, "^") && strings.HasSuffix(want, "$") {
		re, err := regexp.Compile(want)
		return err == nil && re.MatchString(v)
	}
	return false
}

// checkRoles reports, once per finding, the Teleport roles that reach the
// Cluster's db resources as a system user (Warning Event and metric). It
// never fails the pass: a Teleport that refuses the read says so once.
func (r *ClusterReconciler) checkRoles(ctx context.Context, c *cnpgv1.Cluster, spec dbspec.Spec, desired []types.Database) {
	roles, err := r.teleportRoles(ctx)
	if err != nil {
		hint := ""
		if trace.IsAccessDenied(err) {
			hint = " (the controller's Teleport role needs role list/read, see config/teleport/controller-role.yaml)"
		}
		r.risky.warn(r.Recorder, c, ReasonRoleCheckFailed, "CheckRoles", "cannot read Teleport roles%s: %v", hint, err)
		return
	}
	var labels []map[string]string
	for _, d := range desired {
		labels = append(labels, d.GetStaticLabels())
	}
	found := RiskyRoles(roles, labels)
	var grants []WideGrant
	if spec.AutoUsers {
		grants = WideGrants(roles, labels, spec.GrantRoles)
	}
	if len(found)+len(grants) == 0 { // no series for a Cluster without findings: 1,000 Clusters are not 1,000 zeros to scrape
		riskyRoles.DeleteLabelValues(c.Namespace, c.Name)
		r.risky.clear(c)
		return
	}
	riskyRoles.WithLabelValues(c.Namespace, c.Name).Set(float64(len(found) + len(grants)))
	if len(grants) > 0 {
		var parts []string
		for _, g := range grants {
			parts = append(parts, fmt.Sprintf("%s (db_roles %s)", g.Role, strings.Join(g.Roles, ",")))
		}
		r.risky.warn(r.Recorder, c, ReasonRiskyTeleportRole, "CheckGrants",
			"Teleport roles that create PostgreSQL users on this Cluster's databases and grant them roles beyond %s (%s): %s; narrow their db_roles (PostgreSQL 15's CREATEROLE lets the admin grant any role that is not a superuser)",
			strings.Join(spec.GrantRoles, ", "), dbspec.AnnotationAutoUserRoles, strings.Join(parts, "; "))
	}
	if len(found) == 0 {
		return
	}
	var parts []string
	for _, f := range found {
		parts = append(parts, fmt.Sprintf("%s (db_users %s)", f.Role, strings.Join(f.Users, ",")))
	}
	r.risky.warn(r.Recorder, c, ReasonRiskyTeleportRole, "CheckRoles",
		"Teleport roles that reach this Cluster's databases as a CNPG system user: %s; add deny db_users %s (no deny db_labels: those would deny the databases outright; see config/teleport/deny-cnpg-system-users.yaml)",
		strings.Join(parts, "; "), strings.Join(SystemUsers, ", "))
}
