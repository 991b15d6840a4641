package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	"github.com/jackc/pgx/v5"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnpg-teleport/cnpg-teleport/controllers"
	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
	"github.com/cnpg-teleport/cnpg-teleport/pgrules"
	"github.com/cnpg-teleport/cnpg-teleport/test/world"
)

// autoRole is a Teleport role that has Teleport create a PostgreSQL user
// per Teleport user on the controller's rw db resources (v13's option name)
// and grant it dbRoles. No db_users: Teleport connects them as themselves.
func autoRole(name string, dbRoles ...string) string {
	return fmt.Sprintf(`kind: role
version: v6
metadata:
  name: %s
spec:
  options:
    create_db_user: true
  allow:
    db_labels:
      cnpg-teleport.io/managed-by: cnpg-teleport
      cnpg-teleport.io/endpoint: rw
    db_names: [app]
    db_roles: [%s]
`, name, strings.Join(dbRoles, ", "))
}

// pgRole is how PostgreSQL has a role: its attributes and the roles it is a member of.
func pgRole(ctx context.Context, conn *pgx.Conn, name string) (string, error) {
	var login, createRole, super bool
	var member string
	err := conn.QueryRow(ctx, `SELECT r.rolcanlogin, r.rolcreaterole, r.rolsuper,
		coalesce((SELECT string_agg(g.rolname, ',' ORDER BY g.rolname) FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid), '')
		FROM pg_roles r WHERE r.rolname = $1`, name).Scan(&login, &createRole, &super, &member)
	if err != nil {
		return "", fmt.Errorf("role %s: %w", name, err)
	}
	return fmt.Sprintf("login=%t createrole=%t super=%t in=%s", login, createRole, super, member), nil
}

// adminUser is the admin_user of a db resource as the real Teleport has it.
func adminUser(ctx context.Context, tp *world.Teleport, db string) (string, error) {
	out, err := tp.Tctl(ctx, "", "get", "db/"+db, "--format=json")
	if err != nil {
		return "", fmt.Errorf("%w: %s", err, out)
	}
	var dbs []struct {
		Spec struct {
			AdminUser *struct {
				Name string `json:"name"`
			} `json:"admin_user"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(out, &dbs); err != nil {
		return "", fmt.Errorf("tctl get db/%s: %w: %s", db, err, out)
	}
	if len(dbs) != 1 {
		return "", fmt.Errorf("tctl get db/%s: %d db resources: %s", db, len(dbs), out)
	}
	if dbs[0].Spec.AdminUser == nil {
		return "", nil
	}
	return dbs[0].Spec.AdminUser.Name, nil
}

// TestAutoUsers proves per-person PostgreSQL users on a Cluster the real
// CNPG runs, through the real Teleport v13.3.8: with
// cnpg-teleport.io/auto-users, two Teleport users each log in as
// themselves (current_user is their Teleport name) with exactly the
// privileges of the role their Teleport role grants, are NOLOGIN after they
// disconnect, cannot log in as each other, a Teleport role granting more is
// reported, and opting out leaves an admin that can neither log in nor
// create roles.
func TestAutoUsers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const ns, name = "autousers", "pg"
	b := newTrustBed(t, ctx, ns)
	w := b.w

	c := world.NewCluster(ns, name, 1)
	c.Annotations = map[string]string{dbspec.AnnotationRegister: "true", dbspec.AnnotationAutoUsers: "true"}
	t0 := time.Now()
	if err := w.Client.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WaitClusterHealthy(ctx, ns, name, 4*time.Minute); err != nil {
		t.Fatal(err)
	}
	app := secret(ctx, t, w, ns, name+"-app")
	serverCA := secret(ctx, t, w, ns, name+"-ca")
	conn, err := world.ConnectPassword(ctx, name+"-rw."+ns+".svc", "app", string(app.Data["password"]), "app", serverCA.Data["ca.crt"])
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	if _, err := conn.Exec(ctx, "CREATE TABLE t (x int)"); err != nil {
		t.Fatal(err)
	}
	rw := "k1-" + ns + "-" + name + "-rw"
	world.Eventually(t, 3*time.Minute, "admin_user on "+rw, func() error {
		got, err := adminUser(ctx, b.tp, rw)
		if err == nil && got != pgrules.AdminUser {
			err = fmt.Errorf("admin_user %q", got)
		}
		return err
	})
	t.Logf("created -> healthy, admin and schema applied by CNPG, admin_user registered in %s", time.Since(t0).Round(100*time.Millisecond))
	b.event(ns, name, corev1.EventTypeNormal, controllers.ReasonAutoUsersReady)
	if got, err := pgRole(ctx, conn, pgrules.AdminUser); err != nil || got != "login=true createrole=true super=false in=" {
		t.Fatalf("admin in PostgreSQL: %s %v", got, err)
	}

	// Two Teleport users, each allowed one grant by the shipped roles.
	roles, err := os.ReadFile(filepath.Join(world.RepoRoot(), "config", "teleport", "auto-user-roles.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.tp.Create(ctx, string(roles)); err != nil {
		t.Fatal(err)
	}
	alice, err := b.tp.UserWithRoles(ctx, "alice", "cnpg-auto-read")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := b.tp.UserWithRoles(ctx, "bob", "cnpg-auto-write")
	if err != nil {
		t.Fatal(err)
	}
	query := func(u *world.TshUser, stmt string) string {
		t.Helper()
		out, err := u.Query(ctx, rw, u.Name, "app", stmt)
		if err != nil {
			t.Fatalf("%s: %v\n%s", u.Name, err, out)
		}
		return out
	}
	// In a session: who PostgreSQL says it is, and which roles it holds.
	const whoami = `SELECT 'who=' || current_user || '/' || session_user || ' in=' || (SELECT string_agg(g.rolname, ',' ORDER BY g.rolname) FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = current_user);`
	for _, tt := range []struct {
		u    *world.TshUser
		role string
	}{{alice, "teleport_read"}, {bob, "teleport_write"}} {
		want := fmt.Sprintf("who=%s/%s in=%s,%s", tt.u.Name, tt.u.Name, pgrules.AutoUserGroup, tt.role)
		if out := query(tt.u, whoami); !strings.Contains(out, want) {
			t.Fatalf("%s: want %q in\n%s", tt.u.Name, want, out)
		}
	}
	// Exactly the granted privileges: bob writes, alice reads and may not write.
	if out := query(bob, "INSERT INTO t VALUES (7);"); !strings.Contains(out, "INSERT 0 1") {
		t.Fatalf("bob INSERT:\n%s", out)
	}
	if out := query(alice, "SELECT 'sum=' || sum(x) FROM t;"); !strings.Contains(out, "sum=7") {
		t.Fatalf("alice SELECT:\n%s", out)
	}
	if out := query(alice, "INSERT INTO t VALUES (1);"); !strings.Contains(out, "permission denied for table t") {
		t.Fatalf("alice INSERT must be refused:\n%s", out)
	}
	if out := query(alice, "CREATE ROLE mallory;"); !strings.Contains(out, "permission denied to create role") {
		t.Fatalf("alice CREATE ROLE must be refused:\n%s", out)
	}
	// Disconnected: NOLOGIN, every grant but the group taken back.
	for _, u := range []string{"alice", "bob"} {
		world.Eventually(t, 30*time.Second, u+" deactivated", func() error {
			got, err := pgRole(ctx, conn, u)
			if err == nil && got != "login=false createrole=false super=false in="+pgrules.AutoUserGroup {
				err = fmt.Errorf("%s", got)
			}
			return err
		})
	}
	// Nobody logs in as another: Teleport forces the user's own name.
	if out, err := alice.Query(ctx, rw, "bob", "app", "SELECT 1;"); err == nil || !strings.Contains(out, `please use your Teleport username ("alice")`) {
		t.Fatalf("alice as bob must be refused: %v\n%s", err, out)
	}

	// A Teleport role that would grant more than the grantable roles is reported.
	if err := b.tp.Create(ctx, autoRole("auto-wide", "teleport_read", "pg_execute_server_program")); err != nil {
		t.Fatal(err)
	}
	if note := b.event(ns, name, corev1.EventTypeWarning, controllers.ReasonRiskyTeleportRole); !strings.Contains(note, "auto-wide (db_roles pg_execute_server_program)") {
		t.Fatalf("RiskyTeleportRole: %s", note)
	}

	// Opting out: admin_user goes, the admin can neither log in nor create roles.
	if err := w.UpdateCluster(ctx, ns, name, func(c *cnpgv1.Cluster) { delete(c.Annotations, dbspec.AnnotationAutoUsers) }); err != nil {
		t.Fatal(err)
	}
	note := b.event(ns, name, corev1.EventTypeNormal, controllers.ReasonAutoUsersRemoved)
	t.Logf("opt-out: %s", note)
	world.Eventually(t, time.Minute, "admin disabled in PostgreSQL", func() error {
		got, err := pgRole(ctx, conn, pgrules.AdminUser)
		if err == nil && got != "login=false createrole=false super=false in=" {
			err = fmt.Errorf("%s", got)
		}
		return err
	})
	if got, err := adminUser(ctx, b.tp, rw); err != nil || got != "" {
		t.Fatalf("admin_user after opt-out: %q %v", got, err)
	}
	world.Eventually(t, time.Minute, "alice refused once admin_user is gone", func() error {
		out, err := alice.Query(ctx, rw, "alice", "app", "SELECT 1;")
		if err == nil || !strings.Contains(out, "doesn't have admin user configured") {
			return fmt.Errorf("%w: %s", errOrNil(err), out)
		}
		return nil
	})
	var got cnpgv1.Cluster
	if err := w.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &got); err != nil {
		t.Fatal(err)
	}
	for _, l := range got.Spec.PostgresConfiguration.PgHBA {
		if strings.Contains(l, pgrules.AdminUser) {
			t.Fatalf("pg_hba still has %q", l)
		}
	}

	// Opting in again takes up the admin and the users left behind.
	t0 = time.Now()
	if err := w.UpdateCluster(ctx, ns, name, func(c *cnpgv1.Cluster) { c.Annotations[dbspec.AnnotationAutoUsers] = "true" }); err != nil {
		t.Fatal(err)
	}
	world.Eventually(t, 2*time.Minute, "alice back as herself", func() error {
		out, err := alice.Query(ctx, rw, "alice", "app", whoami)
		if want := "who=alice/alice in=" + pgrules.AutoUserGroup + ",teleport_read"; err != nil || !strings.Contains(out, want) {
			return fmt.Errorf("%w: %s", errOrNil(err), out)
		}
		return nil
	})
	t.Logf("opted in again -> alice connects as herself in %s", time.Since(t0).Round(100*time.Millisecond))
}

// errOrNil is err, or an error saying there was none (a command that
// succeeded but printed the wrong thing).
func errOrNil(err error) error {
	if err == nil {
		return errors.New("no error")
	}
	return err
}
