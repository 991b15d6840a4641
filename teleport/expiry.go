package teleport

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"time"

	"github.com/gravitational/trace"
)

// IdentityFileExpiry is when the TLS certificate of an identity file expires:
// after it Teleport refuses the identity (tbot renews it long before). An
// identity file holds the key, the SSH certificate, the TLS certificate and
// then the CA certificates: the first CERTIFICATE block is the identity's.
func IdentityFileExpiry(path string) (time.Time, error) {
	b, err := os.ReadFile(path) //nolint:gosec // the configured identity file
	if err != nil {
		return time.Time{}, trace.ConvertSystemError(err)
	}
	for rest := b; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			return time.Time{}, trace.BadParameter("teleport: identity %s holds no TLS certificate", path)
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		crt, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return time.Time{}, trace.Wrap(err, "teleport: identity %s", path)
		}
		return crt.NotAfter, nil
	}
}

// expiredMessage is the clear part of every error once the
// controller's identity has expired (Teleport's own answer then names no
// cause: a TLS alert or an access denied).
func expiredMessage(path string, notAfter time.Time) string {
	return "the controller's Teleport identity " + path + " expired at " + notAfter.UTC().Format(time.RFC3339) +
		": renew it (tbot does); the controller loads the renewed file within --identity-reload-interval, without a restart"
}
