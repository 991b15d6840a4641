// Package e2e proves cnpg-teleport against the real components of the test
// world: kube-apiserver + etcd, cert-manager, PostgreSQL and Teleport.
package e2e

import (
	"testing"

	"github.com/cnpg-teleport/cnpg-teleport/test/world"
)

func TestMain(m *testing.M) {
	world.Main(m,
		world.Service{Namespace: "foundation", Cluster: "demo"},
		world.Service{Namespace: "tp", Cluster: "demo"},
	)
}
