package controllers

import (
	"fmt"
	"testing"

	"github.com/gravitational/teleport/api/types"

	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
)

func role(t *testing.T, name string, allowLabels types.Labels, allowUsers []string, denyLabels types.Labels, denyUsers []string) types.Role {
	t.Helper()
	r, err := types.NewRole(name, types.RoleSpecV6{
		Allow: types.RoleConditions{DatabaseLabels: allowLabels, DatabaseUsers: allowUsers},
		Deny:  types.RoleConditions{DatabaseLabels: denyLabels, DatabaseUsers: denyUsers},
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRiskyRoles(t *testing.T) {
	ours := types.Labels{dbspec.LabelManagedBy: {dbspec.ManagedByValue}}
	all := types.Labels{types.Wildcard: {types.Wildcard}}
	db := map[string]string{dbspec.LabelManagedBy: dbspec.ManagedByValue, "team": "db", "env": "prod"}
	roles := []types.Role{
		role(t, "wide", ours, []string{"*"}, nil, nil),
		role(t, "narrow", ours, []string{"teleport_read", "teleport_write"}, nil, nil),
		role(t, "wide-but-denied", ours, []string{"*"}, nil, SystemUsers), // the shipped deny rule
		role(t, "wide-denied-here", all, []string{"*"}, ours, nil),        // deny labels: the db is denied outright
		role(t, "wide-partly-denied", all, []string{"*"}, nil, []string{"postgres"}),
		role(t, "replica", types.Labels{"team": {"db"}}, []string{"streaming_replica", "app"}, nil, nil),
		role(t, "elsewhere", types.Labels{"team": {"web"}}, []string{"*"}, nil, nil),
		role(t, "regex", types.Labels{"env": {"^pro.*$"}}, []string{"cnpg_pooler_pgbouncer"}, nil, nil),
		role(t, "deny-all-users", all, []string{"*"}, all, []string{"*"}),
		role(t, "traits", all, []string{"{{internal.db_users}}"}, nil, nil),
		role(t, "no-labels", nil, []string{"*"}, nil, nil),
	}
	got := fmt.Sprint(RiskyRoles(roles, []map[string]string{db}))
	want := "[{regex [cnpg_pooler_pgbouncer]} {replica [streaming_replica]} {wide [*]} {wide-partly-denied [*]}]"
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	// Another db: only the "*": "*" roles reach it; a deny on our labels does not apply there.
	if got := fmt.Sprint(RiskyRoles(roles, []map[string]string{{"other": "x"}})); got != "[{wide-denied-here [*]} {wide-partly-denied [*]}]" {
		t.Fatalf("a db without our labels: %v", got)
	}
}

func grantRole(t *testing.T, name string, create bool, allowLabels types.Labels, allowRoles []string, denyLabels types.Labels, denyRoles []string) types.Role {
	t.Helper()
	spec := types.RoleSpecV6{
		Allow: types.RoleConditions{DatabaseLabels: allowLabels, DatabaseRoles: allowRoles},
		Deny:  types.RoleConditions{DatabaseLabels: denyLabels, DatabaseRoles: denyRoles},
	}
	if create {
		spec.Options.CreateDatabaseUser = types.NewBoolOption(true) // v13's option
	}
	r, err := types.NewRole(name, spec)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestWideGrants(t *testing.T) {
	ours := types.Labels{dbspec.LabelManagedBy: {dbspec.ManagedByValue}}
	all := types.Labels{types.Wildcard: {types.Wildcard}}
	db := map[string]string{dbspec.LabelManagedBy: dbspec.ManagedByValue, "env": "prod"}
	roles := []types.Role{
		grantRole(t, "reader", true, ours, []string{"teleport_read"}, nil, nil),
		grantRole(t, "wide", true, ours, []string{"teleport_read", "pg_execute_server_program", "app"}, nil, nil),
		grantRole(t, "wide-but-no-create", false, ours, []string{"pg_execute_server_program"}, nil, nil),
		grantRole(t, "wide-partly-denied", true, all, []string{"pg_write_server_files", "app"}, nil, []string{"app"}),
		grantRole(t, "wide-denied-here", true, all, []string{"app"}, ours, nil),
		grantRole(t, "elsewhere", true, types.Labels{"env": {"dev"}}, []string{"app"}, nil, nil),
		grantRole(t, "traits", true, all, []string{"{{internal.db_roles}}"}, nil, nil),
	}
	got := fmt.Sprint(WideGrants(roles, []map[string]string{db}, []string{"teleport_read", "teleport_write"}))
	want := "[{wide [app pg_execute_server_program]} {wide-partly-denied [pg_write_server_files]}]"
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}
