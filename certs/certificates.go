package certs

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The certificates cnpg-teleport issues through cert-manager when a Cluster's
// client or server CA is an issuer whose key nobody holds (issuer mode), so
// CNPG cannot sign them itself. Pure builders: the controller applies them.

// ServerDNSNames are the names CNPG's own server certificate carries: each
// service <cluster>-rw, -r, -ro as svc, svc.ns, svc.ns.svc and
// svc.ns.svc.<domain>, then spec.certificates.serverAltDNSNames.
func ServerDNSNames(c *cnpgv1.Cluster, domain string) []string {
	var names []string
	for _, ep := range []string{"rw", "r", "ro"} {
		svc := c.Name + "-" + ep
		names = append(names, svc, svc+"."+c.Namespace, svc+"."+c.Namespace+".svc", svc+"."+c.Namespace+".svc."+domain)
	}
	if c.Spec.Certificates != nil {
		names = append(names, c.Spec.Certificates.ServerAltDNSNames...)
	}
	return names
}

// ReplicationSecretName and ServerSecretName are the Secrets cert-manager writes.
func ReplicationSecretName(c *cnpgv1.Cluster) string { return c.Name + "-teleport-replication" }

// ServerSecretName is the server certificate's Secret (it holds ca.crt too).
func ServerSecretName(c *cnpgv1.Cluster) string { return c.Name + "-teleport-server" }

// ReplicationCertificate is the streaming replication client certificate
// (CN streaming_replica, client auth), its Secret labelled for CNPG's reload.
func ReplicationCertificate(c *cnpgv1.Cluster, issuer cmmeta.IssuerReference, labels map[string]string) *cmapi.Certificate {
	return certificate(c, ReplicationSecretName(c), issuer, labels, cmapi.CertificateSpec{
		CommonName: "streaming_replica",
		Usages:     []cmapi.KeyUsage{cmapi.UsageClientAuth, cmapi.UsageDigitalSignature, cmapi.UsageKeyEncipherment},
	})
}

// ServerCertificate is the PostgreSQL server certificate for every service
// name, and extra (the Poolers' services: PgBouncer presents the Cluster's
// server certificate to its clients).
func ServerCertificate(c *cnpgv1.Cluster, issuer cmmeta.IssuerReference, domain string, extra []string, labels map[string]string) *cmapi.Certificate {
	return certificate(c, ServerSecretName(c), issuer, labels, cmapi.CertificateSpec{
		CommonName: c.Name + "-rw",
		DNSNames:   append(ServerDNSNames(c, domain), extra...),
		Usages:     []cmapi.KeyUsage{cmapi.UsageServerAuth, cmapi.UsageDigitalSignature, cmapi.UsageKeyEncipherment},
	})
}

// PoolerSecretName is the Secret CNPG's automated Pooler integration reads:
// PgBouncer's client certificate towards PostgreSQL.
func PoolerSecretName(c *cnpgv1.Cluster) string { return c.Name + "-pooler" }

// PoolerCertificateName is the cert-manager Certificate that writes it in issuer mode.
func PoolerCertificateName(c *cnpgv1.Cluster) string { return c.Name + "-teleport-pooler" }

// CNPG renews a certificate it finds within 7 days of expiry (its
// ExpiringCheckThreshold), which in issuer mode it cannot sign: cert-manager
// renews this one 30 days before, so CNPG never tries.
var (
	poolerDuration    = metav1.Duration{Duration: 90 * 24 * time.Hour}
	poolerRenewBefore = metav1.Duration{Duration: 30 * 24 * time.Hour}
)

// PoolerCertificate is PgBouncer's client certificate towards PostgreSQL
// (CN cnpg_pooler_pgbouncer, client auth), written under the name CNPG's
// automated integration expects, so CNPG keeps creating the
// cnpg_pooler_pgbouncer role and its user_search function and keeps the
// Pooler automated; only the signing moves to the client issuer.
func PoolerCertificate(c *cnpgv1.Cluster, issuer cmmeta.IssuerReference, labels map[string]string) *cmapi.Certificate {
	crt := certificate(c, PoolerSecretName(c), issuer, labels, cmapi.CertificateSpec{
		CommonName:  "cnpg_pooler_pgbouncer",
		Usages:      []cmapi.KeyUsage{cmapi.UsageClientAuth, cmapi.UsageDigitalSignature, cmapi.UsageKeyEncipherment},
		Duration:    &poolerDuration,
		RenewBefore: &poolerRenewBefore,
	})
	crt.Name = PoolerCertificateName(c)
	return crt
}

// VerifyClient checks that the first certificate of tlsCrt (the rest are
// intermediates) is a client certificate that chains, at now, to a
// certificate of bundle: what PostgreSQL will check against ssl_ca_file.
func VerifyClient(tlsCrt, bundle []byte, now time.Time) error {
	ders, err := certificates(tlsCrt)
	if err != nil {
		return err
	}
	if len(ders) == 0 {
		return fmt.Errorf("%w: no certificate", ErrNotCertificate)
	}
	leaf, err := x509.ParseCertificate(ders[0])
	if err != nil {
		return err
	}
	inter := x509.NewCertPool()
	for _, d := range ders[1:] {
		if c, err := x509.ParseCertificate(d); err == nil {
			inter.AddCert(c)
		}
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		return fmt.Errorf("%w: the bundle holds no certificate", ErrNotCertificate)
	}
	_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		return fmt.Errorf("CN=%s issued by %q: %w", leaf.Subject.CommonName, leaf.Issuer.String(), err)
	}
	return nil
}

func certificate(c *cnpgv1.Cluster, name string, issuer cmmeta.IssuerReference, labels map[string]string, spec cmapi.CertificateSpec) *cmapi.Certificate {
	secretLabels := map[string]string{}
	for k, v := range labels {
		secretLabels[k] = v
	}
	secretLabels[ReloadLabel] = "true"
	spec.SecretName = name
	spec.IssuerRef = issuer
	spec.PrivateKey = &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256, RotationPolicy: cmapi.RotationPolicyAlways}
	spec.SecretTemplate = &cmapi.CertificateSecretTemplate{Labels: secretLabels}
	return &cmapi.Certificate{
		TypeMeta: metav1.TypeMeta{APIVersion: cmapi.SchemeGroupVersion.String(), Kind: cmapi.CertificateKind},
		ObjectMeta: metav1.ObjectMeta{
			Namespace: c.Namespace, Name: name, Labels: labels,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: cnpgv1.SchemeGroupVersion.String(), Kind: cnpgv1.ClusterKind, Name: c.Name, UID: c.UID,
			}},
		},
		Spec: spec,
	}
}

// IssuerChain is the CA chain an issued Secret names: ca.crt, then the
// intermediates that follow the leaf in tls.crt. PostgreSQL (OpenSSL) builds
// a client's chain only up to a root it holds, so a bundle needs the root
// (ca.crt of a CA issuer) and may carry the intermediates.
func IssuerChain(caCrt, tlsCrt []byte) []byte {
	out := append([]byte(nil), caCrt...)
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	rest := tlsCrt
	for first := true; ; first = false {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return out
		}
		if !first && b.Type == "CERTIFICATE" {
			out = append(out, pem.EncodeToMemory(b)...)
		}
	}
}
