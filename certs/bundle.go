// Package certs builds, without a client or a context, what PostgreSQL must
// trust: the client-CA bundle Secret (the Cluster's own client CA first, then
// Teleport's database-client CA certificates). It takes PEM bytes, never a
// Teleport client, and imports neither controllers/ nor teleport/.
package certs

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ReloadLabel makes CNPG watch a Secret the Cluster does not own by itself:
// without it a changed bundle is not picked up (shared/notes/cnpg.md).
const ReloadLabel = "cnpg.io/reload"

// ErrNotCertificate means a CA input held a PEM block that is not a certificate.
var ErrNotCertificate = errors.New("not a certificate")

// certificates returns the DER of each PEM CERTIFICATE block of pemBytes, in
// order. Any other block (a private key above all) is an error: it never
// reaches a bundle.
func certificates(pemBytes []byte) ([][]byte, error) {
	var out [][]byte
	rest := pemBytes
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%w: a %s block", ErrNotCertificate, b.Type)
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return nil, fmt.Errorf("certificate: %w", err)
		}
		out = append(out, b.Bytes)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("%w: trailing data that is not PEM", ErrNotCertificate)
	}
	return out, nil
}

// ClientCABundle is the ca.crt of the client-CA bundle: the Cluster's own
// client CA certificate first (CNPG signs with the key of the first
// certificate and checks only its expiry), then every other trusted
// certificate (Teleport's database-client CA, active and additional keys),
// deduplicated and sorted by SHA-256 so the same trust gives the same bytes
// whatever order Teleport lists its keys in (no rewrite, no reload).
func ClientCABundle(own []byte, trusted [][]byte) ([]byte, error) {
	ownCerts, err := certificates(own)
	if err != nil {
		return nil, fmt.Errorf("the Cluster's client CA: %w", err)
	}
	if len(ownCerts) == 0 {
		return nil, fmt.Errorf("the Cluster's client CA: %w: no certificate", ErrNotCertificate)
	}
	var extra [][]byte
	for _, p := range trusted {
		ders, err := certificates(p)
		if err != nil {
			return nil, fmt.Errorf("trusted CA: %w", err)
		}
		for _, d := range ders {
			if !slices.ContainsFunc(ownCerts, func(o []byte) bool { return bytes.Equal(o, d) }) &&
				!slices.ContainsFunc(extra, func(o []byte) bool { return bytes.Equal(o, d) }) {
				extra = append(extra, d)
			}
		}
	}
	if len(extra) == 0 {
		return nil, errors.New("no trusted CA certificate besides the Cluster's own: the bundle would trust nobody new")
	}
	slices.SortFunc(extra, func(a, b []byte) int {
		ha, hb := sha256.Sum256(a), sha256.Sum256(b)
		return bytes.Compare(ha[:], hb[:])
	})
	var buf bytes.Buffer
	for _, d := range append(ownCerts, extra...) {
		if err := pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: d}); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

// CheckSigningKey verifies what CNPG will do with the bundle: parse ca.key
// with the first certificate of ca.crt as a key pair, and sign with it, which
// needs an "EC PRIVATE KEY" block (a PKCS#8 "PRIVATE KEY" is accepted at the
// switch and breaks CNPG's next signing silently).
func CheckSigningKey(caCrt, caKey []byte) error {
	b, _ := pem.Decode(caKey)
	if b == nil || b.Type != "EC PRIVATE KEY" {
		return errors.New("ca.key is not an EC PRIVATE KEY PEM block, which CNPG needs to sign")
	}
	if _, err := tls.X509KeyPair(caCrt, caKey); err != nil {
		return fmt.Errorf("ca.key does not match the first certificate of ca.crt: %w", err)
	}
	return nil
}

// BundleSecret is the client-CA bundle Secret of a Cluster: owned by it (the
// garbage collector removes it with the Cluster; not as its controller, which
// is CNPG's role for its own Secrets), labelled for CNPG's reload,
// ca.key copied byte for byte from the Cluster's own client CA so CNPG keeps
// issuing its replication, pooler and DatabaseRole client certificates.
func BundleSecret(c *cnpgv1.Cluster, name string, caCrt, caKey []byte, labels map[string]string) *corev1.Secret {
	l := map[string]string{}
	for k, v := range labels {
		l[k] = v
	}
	l[ReloadLabel] = "true"
	return &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Namespace: c.Namespace, Name: name, Labels: l,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: cnpgv1.SchemeGroupVersion.String(), Kind: cnpgv1.ClusterKind, Name: c.Name, UID: c.UID,
			}},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{"ca.crt": caCrt, "ca.key": caKey},
	}
}

// PreviousKey holds, in the bundle Secret, the Cluster's previous own client
// CA certificate while it is carried (CNPG reads only ca.crt and ca.key).
const PreviousKey = "previous-ca.crt"

// PreviousOwnCA is the own client CA certificate that the current bundle
// carries for what it signed: the bundle's first certificate when own no
// longer starts with it (the Cluster's client CA was renewed or replaced),
// else the one already kept; only while it has not expired at now, and never
// own's own first certificate. Nothing when there is none.
func PreviousOwnCA(bundle, kept, own []byte, now time.Time) []byte {
	cur, err := certificates(own)
	if err != nil || len(cur) == 0 {
		return nil
	}
	for _, src := range [][]byte{bundle, kept} {
		ders, err := certificates(src)
		if err != nil || len(ders) == 0 || bytes.Equal(ders[0], cur[0]) {
			continue
		}
		c, err := x509.ParseCertificate(ders[0])
		if err != nil || now.After(c.NotAfter) {
			continue
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ders[0]})
	}
	return nil
}
