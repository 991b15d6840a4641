package teleport

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"

	"github.com/gravitational/teleport/api/types"
	"github.com/gravitational/trace"
)

// CAGetter is the part of the Teleport API that reads a certificate
// authority. Both the API client and the test fake (teleporttest.Fake) have
// it, so DatabaseClientCAsFrom, the one place that chooses the CA, is shared
// and tested once.
type CAGetter interface {
	GetCertAuthority(ctx context.Context, id types.CertAuthID, loadKeys bool) (types.CertAuthority, error)
}

// DatabaseClientCAsFrom asks for the db_client CA (Teleport >= 15 signs the
// database agent's client certificates with it) and falls back to the db CA
// when the server does not have one: NotFound, or BadParameter
// `"db_client" authority type is not supported` from Teleport <= 14. Errors are
// classified by kind, never by text; any other error (AccessDenied, a lost
// connection) is returned, since guessing the db CA then would make PostgreSQL
// trust the wrong authority. Keys are never asked for.
func DatabaseClientCAsFrom(ctx context.Context, g CAGetter, clusterName string) ([][]byte, error) {
	if clusterName == "" {
		return nil, trace.BadParameter("teleport: reading the database client CA: no cluster name")
	}
	caType := types.DatabaseClientCA
	ca, err := g.GetCertAuthority(ctx, types.CertAuthID{Type: caType, DomainName: clusterName}, false)
	if trace.IsNotFound(err) || trace.IsBadParameter(err) {
		caType = types.DatabaseCA
		ca, err = g.GetCertAuthority(ctx, types.CertAuthID{Type: caType, DomainName: clusterName}, false)
	}
	if err != nil {
		return nil, trace.Wrap(err, "teleport: reading the %s CA of %s", caType, clusterName)
	}
	certs, err := trustedCertificates(ca)
	if err != nil {
		return nil, trace.Wrap(err, "teleport: the %s CA of %s", caType, clusterName)
	}
	return certs, nil
}

// trustedCertificates returns one PEM "CERTIFICATE" block per distinct
// certificate of every trusted TLS key pair, active first, then additional
// (during a rotation both must be trusted). Only CERTIFICATE blocks are
// copied out, re-encoded without headers: whatever else a key pair carries,
// a private key included, never reaches the output.
func trustedCertificates(ca types.CertAuthority) ([][]byte, error) {
	var out [][]byte
	var seen [][]byte // DER of certificates already in out
	for _, kp := range ca.GetTrustedTLSKeyPairs() {
		rest := kp.Cert
		found := false
		for {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				break
			}
			if block.Type != "CERTIFICATE" {
				continue
			}
			found = true
			if _, err := x509.ParseCertificate(block.Bytes); err != nil {
				return nil, trace.BadParameter("trusted TLS key pair holds an invalid certificate: %v", err)
			}
			if containsBytes(seen, block.Bytes) {
				continue
			}
			seen = append(seen, block.Bytes)
			out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes}))
		}
		if !found {
			return nil, trace.BadParameter("trusted TLS key pair holds no PEM certificate")
		}
	}
	if len(out) == 0 {
		return nil, trace.NotFound("no trusted TLS certificate")
	}
	return out, nil
}

// containsBytes reports whether list holds b, to deduplicate certificates.
func containsBytes(list [][]byte, b []byte) bool {
	for _, x := range list {
		if bytes.Equal(x, b) {
			return true
		}
	}
	return false
}
