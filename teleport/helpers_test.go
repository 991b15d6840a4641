package teleport

import "github.com/cnpg-teleport/cnpg-teleport/internal/testpki"

// The certificate helpers are shared with teleporttest's tests.
var (
	newCert     = testpki.NewCert
	cert        = testpki.Cert
	commonNames = testpki.CommonNames
)
