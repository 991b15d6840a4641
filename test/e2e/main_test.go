// Package e2e proves cnpg-teleport against the real components of the test
// world: kube-apiserver + etcd, kube-controller-manager, cert-manager, the
// CNPG operator and instance manager with PostgreSQL and PgBouncer, Teleport.
package e2e

import (
	"testing"

	"github.com/cnpg-teleport/cnpg-teleport/test/world"
)

func TestMain(m *testing.M) { world.Main(m) }
