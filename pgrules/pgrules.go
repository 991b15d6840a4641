// Package pgrules holds what cnpg-teleport writes into PostgreSQL's own
// configuration, and the rules for the role names it may use: its pg_hba and
// pg_ident lines (recognisable by Marker, always first among the user's,
// removable exactly) and the checks that keep a tenant from naming a role it
// must not widen. It is pure and imports nothing but the standard library,
// so its fuzz target builds small (clusterspec applies it to a Cluster).
package pgrules

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Marker ends every pg_hba line cnpg-teleport writes (a comment is legal
// pg_hba syntax), so exactly those lines can be found and removed.
const Marker = "# cnpg-teleport"

// Default role names, and the annotations that choose others.
const (
	DefaultReadRole  = "teleport_read"
	DefaultWriteRole = "teleport_write"
)

// Automatic user provisioning: Teleport's database agent logs in as
// AdminUser, creates a PostgreSQL user per Teleport user (in role
// AutoUserGroup), grants it the roles the user's Teleport role lists, and
// takes them back (NOLOGIN) when the session ends.
const (
	// AdminUser is the PostgreSQL user Teleport provisions users with. The
	// controller fixes it: it is never a tenant's choice.
	AdminUser = "teleport_admin"
	// AutoUserGroup is the role Teleport puts every user it creates in.
	AutoUserGroup = "teleport-auto-user"
)

// IdentMap is the pg_ident map of the rule when a Pooler is registered.
const IdentMap = "cnpg-teleport"

// PoolerUser is the user CNPG's PgBouncer logs in to PostgreSQL as (CN of
// its client certificate <cluster>-pooler).
const PoolerUser = "cnpg_pooler_pgbouncer"

var roleName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// Roles are the facts of a Cluster the role checks read (clusterspec.Roles
// takes them from one).
type Roles struct {
	// InitDBOwner is spec.bootstrap.initdb.owner as written ("" if unset).
	InitDBOwner string
	// AppDatabase and AppOwner are the application database and its owner,
	// however the Cluster was bootstrapped (CNPG's default: app, owned by app).
	AppDatabase, AppOwner string
	// Managed are the names in spec.managed.roles.
	Managed []string
}

// CheckRole refuses a name that is not a plain PostgreSQL identifier or
// that names a role CNPG or PostgreSQL own, or one the Cluster already
// manages (taking it over would widen who reaches it).
func (r Roles) CheckRole(name string) error {
	if err := CheckName(name); err != nil {
		return err
	}
	if r.InitDBOwner == name {
		return fmt.Errorf("role %q owns the Cluster's application database", name)
	}
	if slices.Contains(r.Managed, name) {
		return fmt.Errorf("role %q is already in spec.managed.roles", name)
	}
	return nil
}

// CheckAdmin refuses auto-users on a Cluster whose own spec already has the
// admin's name: it would not be the controller's to configure.
func (r Roles) CheckAdmin() error {
	if r.InitDBOwner == AdminUser {
		return fmt.Errorf("role %q owns the Cluster's application database", AdminUser)
	}
	if slices.Contains(r.Managed, AdminUser) {
		return fmt.Errorf("role %q is in spec.managed.roles: the controller provisions it", AdminUser)
	}
	return nil
}

// CheckGrantable refuses a role Teleport's users must never be granted:
// not an identifier, a role of PostgreSQL or CNPG (postgres is the
// superuser), the admin, or the owner of the application database.
func (r Roles) CheckGrantable(name string) error {
	if err := CheckName(name); err != nil {
		return err
	}
	if name == r.AppOwner {
		return fmt.Errorf("role %q owns the application database %s", name, r.AppDatabase)
	}
	return nil
}

// CheckName refuses a name that is not a plain PostgreSQL identifier, or
// that names a role of PostgreSQL or CNPG, or Teleport's admin.
func CheckName(name string) error {
	switch {
	case !roleName.MatchString(name):
		return fmt.Errorf("role %q: want a lower-case PostgreSQL identifier ([a-z_][a-z0-9_]*, at most 63)", name)
	case name == "postgres" || name == "streaming_replica" || strings.HasPrefix(name, "pg_") || strings.HasPrefix(name, "cnpg_"):
		return fmt.Errorf("role %q is reserved by PostgreSQL or CNPG", name)
	case name == AdminUser:
		return fmt.Errorf("role %q is reserved: Teleport's admin for automatic user provisioning", name)
	}
	return nil
}

// HBALine is the one pg_hba rule: Teleport's client certificates, CN = role.
func HBALine(roles ...string) string {
	return "hostssl all " + strings.Join(roles, ",") + " all cert " + Marker
}

// MappedHBALine is HBALine with the pg_ident map that also lets PgBouncer's
// client certificate (CN cnpg_pooler_pgbouncer) log in as the roles: how a
// Teleport user, authenticated by certificate at a registered Pooler,
// reaches PostgreSQL through it. Only while a Pooler is registered.
func MappedHBALine(roles ...string) string {
	return "hostssl all " + strings.Join(roles, ",") + " all cert map=" + IdentMap + " " + Marker
}

// IdentLines are the map of MappedHBALine: each role as itself (a Teleport
// certificate straight to PostgreSQL) and PgBouncer's user as each role.
func IdentLines(roles ...string) []string {
	var out []string
	for _, r := range roles {
		out = append(out, IdentMap+" "+r+" "+r+" "+Marker)
	}
	for _, r := range roles {
		out = append(out, IdentMap+" "+PoolerUser+" "+r+" "+Marker)
	}
	return out
}

// PoolerHBALine is the PgBouncer hba rule of a registered Pooler: the roles
// only by a client certificate whose CN is the role (PgBouncer checks the
// name and the chain against its client CA, the Cluster's bundle).
func PoolerHBALine(roles ...string) string {
	return "hostssl all " + strings.Join(roles, ",") + " all cert " + Marker
}

// AutoUsersHBALine lets the admin and Teleport's users in by Teleport
// client certificate (CN = user). Group membership (+role) covers the
// users: only the admin (CREATEROLE) and superusers can make a member.
func AutoUsersHBALine() string {
	return "hostssl all " + AdminUser + ",+" + AutoUserGroup + " all cert " + Marker
}

// Ours reports a line cnpg-teleport wrote (it ends with Marker).
func Ours(line string) bool { return strings.HasSuffix(strings.TrimSpace(line), Marker) }

// MergeHBA puts our lines first among the user's (pg_hba is first match:
// no user line can shadow them; only CNPG's fixed rules for its own users
// come before), dropping any older line of ours and keeping every user line
// in its order.
func MergeHBA(lines []string, mine ...string) []string {
	return append(slices.Clone(mine), StripHBA(lines)...)
}

// StripHBA removes exactly our lines.
func StripHBA(lines []string) []string {
	out := slices.DeleteFunc(slices.Clone(lines), Ours)
	if len(out) == 0 {
		return nil
	}
	return out
}
