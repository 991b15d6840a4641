package world

import (
	"crypto/tls"
	"net/http"
)

// insecureWebClient talks to the world's Teleport proxy web API, whose
// certificate is self-signed (a plain go build has no ACME and no web assets).
// Only the password-reset call of test users uses it.
func insecureWebClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // test world's self-signed proxy web cert
	}}
}
