package clusterspec

import (
	"strings"
	"testing"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cnpg-teleport/cnpg-teleport/pgrules"
)

func TestAppDatabase(t *testing.T) {
	for _, tt := range []struct {
		boot        *cnpgv1.BootstrapConfiguration
		name, owner string
	}{
		{nil, "app", "app"},
		{&cnpgv1.BootstrapConfiguration{InitDB: &cnpgv1.BootstrapInitDB{Database: "shop", Owner: "shop_owner"}}, "shop", "shop_owner"},
		{&cnpgv1.BootstrapConfiguration{InitDB: &cnpgv1.BootstrapInitDB{Database: "shop"}}, "shop", "shop"},
		{&cnpgv1.BootstrapConfiguration{Recovery: &cnpgv1.BootstrapRecovery{Database: "r", Owner: "o"}}, "r", "o"},
		{&cnpgv1.BootstrapConfiguration{PgBaseBackup: &cnpgv1.BootstrapPgBaseBackup{}}, "app", "app"},
	} {
		c := &cnpgv1.Cluster{Spec: cnpgv1.ClusterSpec{Bootstrap: tt.boot}}
		if name, owner := AppDatabase(c); name != tt.name || owner != tt.owner {
			t.Errorf("%+v: %s/%s, want %s/%s", tt.boot, name, owner, tt.name, tt.owner)
		}
	}
}

func TestAdminObjects(t *testing.T) {
	c := &cnpgv1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pg", UID: "u"}}
	if got := pgrules.AutoUsersHBALine(); got != "hostssl all teleport_admin,+teleport-auto-user all cert # cnpg-teleport" {
		t.Errorf("hba %q", got)
	}
	d := AdminDatabase(c, "app", "app", nil)
	if d.Name != "pg-teleport-app" || d.Spec.ReclaimPolicy != cnpgv1.DatabaseReclaimRetain || !HasAdminSchema(d) || d.OwnerReferences[0].UID != "u" {
		t.Errorf("%+v", d)
	}
	if AdminSchemaApplied(d) {
		t.Error("applied without a status")
	}
	d.Generation = 2
	d.Status.Applied, d.Status.ObservedGeneration = ptr(true), 2
	d.Status.Schemas = []cnpgv1.DatabaseObjectStatus{{Name: pgrules.AdminUser, Applied: false, Message: "permission denied"}}
	if AdminSchemaApplied(d) {
		t.Error("applied with the schema failing")
	}
	d.Status.Schemas[0].Applied = true
	if !AdminSchemaApplied(d) {
		t.Error("not applied")
	}
	d.Generation = 3
	if AdminSchemaApplied(d) {
		t.Error("applied for an older generation")
	}
	for db, want := range map[string]string{"my_db": "pg-teleport-my-db", "Shop": "pg-teleport-", strings.Repeat("a", 300): "pg-teleport-"} {
		got := AdminDatabaseName(c, db)
		if !strings.HasPrefix(got, want) || len(got) > 253 || (want == "pg-teleport-" && len(got) != len("pg-teleport-")+8) {
			t.Errorf("%q: %q", db, got)
		}
	}
	admin := DatabaseRole(c, AdminRole(), nil).Spec
	off := DatabaseRole(c, DisabledAdminRole(), nil).Spec
	if !admin.Login || !admin.CreateRole || admin.Superuser || admin.ReclaimPolicy != cnpgv1.DatabaseRoleReclaimDelete ||
		off.Login || off.CreateRole || off.ReclaimPolicy != cnpgv1.DatabaseRoleReclaimRetain {
		t.Errorf("admin %+v\noff %+v", admin, off)
	}
}

func TestCheckGrantable(t *testing.T) {
	c := &cnpgv1.Cluster{Spec: cnpgv1.ClusterSpec{Bootstrap: &cnpgv1.BootstrapConfiguration{InitDB: &cnpgv1.BootstrapInitDB{Database: "shop", Owner: "shop_owner"}}}}
	for name, ok := range map[string]bool{
		"teleport_read": true, "analyst": true, "app": true,
		"postgres": false, "streaming_replica": false, "pg_read_server_files": false, "cnpg_pooler_pgbouncer": false,
		"teleport_admin": false, "shop_owner": false, "Analyst": false, "": false,
	} {
		if err := RoleFacts(c).CheckGrantable(name); (err == nil) != ok {
			t.Errorf("%q: %v", name, err)
		}
	}
}
