package teleporttest

import (
	"testing"

	"github.com/gravitational/teleport/api/types"

	"github.com/cnpg-teleport/cnpg-teleport/internal/testpki"
)

// The certificate helpers are shared with package teleport's tests.
var (
	cert        = testpki.Cert
	commonNames = testpki.CommonNames
)

// newDB builds a valid postgres db resource.
func newDB(t *testing.T, name string, labels map[string]string) *types.DatabaseV3 {
	t.Helper()
	d, err := types.NewDatabaseV3(types.Metadata{Name: name, Labels: labels},
		types.DatabaseSpecV3{Protocol: "postgres", URI: name + "-rw.ns.svc.cluster.local:5432"})
	if err != nil {
		t.Fatal(err)
	}
	return d
}
