package world

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	corev1 "k8s.io/api/core/v1"
)

// Connect connects to the server by its DNS name with sslmode=verify-full,
// trusting rootCA, with a password and, when cert is not nil, a client
// certificate.
func Connect(ctx context.Context, dnsName, user, password, dbname string, rootCA []byte, cert *tls.Certificate) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=5432 dbname=%s sslmode=verify-full connect_timeout=5", dnsName, dbname))
	if err != nil {
		return nil, err
	}
	cfg.User, cfg.Password = user, password
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(rootCA) {
		return nil, fmt.Errorf("no CA certificate in rootCA")
	}
	// verify-full: pgx has already set ServerName to dnsName and full
	// verification; only the roots and the client certificate are ours.
	cfg.TLSConfig.RootCAs = pool
	if cert != nil {
		// Always sent: crypto/tls would otherwise send none when the server's
		// list of acceptable CAs does not name the certificate's issuer, and
		// a refusal of that certificate would go untested.
		cfg.TLSConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	cfg.Fallbacks = nil
	return pgx.ConnectConfig(ctx, cfg)
}

// ConnectPassword connects with sslmode=verify-full and a password.
func ConnectPassword(ctx context.Context, dnsName, user, password, dbname string, rootCA []byte) (*pgx.Conn, error) {
	return Connect(ctx, dnsName, user, password, dbname, rootCA, nil)
}

// ConnectTLS connects with sslmode=verify-full presenting the client
// certificate of clientSecret (a kubernetes.io/tls Secret, e.g. written by
// cert-manager), database postgres.
func ConnectTLS(ctx context.Context, dnsName, user string, rootCA []byte, clientSecret *corev1.Secret) (*pgx.Conn, error) {
	cert, err := tls.X509KeyPair(clientSecret.Data[corev1.TLSCertKey], clientSecret.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return nil, err
	}
	return Connect(ctx, dnsName, user, "", "postgres", rootCA, &cert)
}

// SignClient issues a one-hour client certificate for cn with a CA's PEM
// certificate and EC key (CNPG's <cluster>-ca holds them as ca.crt, ca.key).
func SignClient(caCrt, caKey []byte, cn string) (*tls.Certificate, error) {
	cb, _ := pem.Decode(caCrt)
	kb, _ := pem.Decode(caKey)
	if cb == nil || kb == nil {
		return nil, fmt.Errorf("CA certificate or key is not PEM")
	}
	parent, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, err
	}
	pk, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, err
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &k.PublicKey, pk)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}, nil
}

// PgBenchResult is what a pgbench run reported.
type PgBenchResult struct {
	Processed, Failed int
	Output            string
}

var (
	processedRE = regexp.MustCompile(`number of transactions actually processed: (\d+)`)
	failedRE    = regexp.MustCompile(`number of failed transactions: (\d+)`)
)

// PgBench runs the host's pgbench (the PostgreSQL package's) against
// dnsName with sslmode=verify-full, trusting rootCA and logging in with a
// password; args are pgbench's own (-i, -c 2 -j 2 -T 30, ...). An
// initialisation (-i) reports nothing to parse.
func PgBench(ctx context.Context, dir, dnsName, user, password, dbname string, rootCA []byte, args ...string) (PgBenchResult, error) {
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pgbench")
	if len(bins) == 0 {
		return PgBenchResult{}, fmt.Errorf("no pgbench under /usr/lib/postgresql (make deps installs PostgreSQL)")
	}
	ca := filepath.Join(dir, "pgbench-root.crt")
	if err := os.WriteFile(ca, rootCA, 0o600); err != nil {
		return PgBenchResult{}, err
	}
	cmd := exec.CommandContext(ctx, bins[len(bins)-1], append(args, "-h", dnsName, "-p", "5432", "-U", user, dbname)...)
	cmd.Env = append(os.Environ(), "PGSSLMODE=verify-full", "PGSSLROOTCERT="+ca, "PGPASSWORD="+password, "PGCONNECT_TIMEOUT=5")
	out, err := cmd.CombinedOutput()
	res := PgBenchResult{Output: string(out)}
	if err != nil {
		return res, fmt.Errorf("pgbench %v: %w\n%s", args, err, out)
	}
	if m := processedRE.FindSubmatch(out); m != nil {
		res.Processed, _ = strconv.Atoi(string(m[1]))
	}
	if m := failedRE.FindSubmatch(out); m != nil {
		res.Failed, _ = strconv.Atoi(string(m[1]))
	}
	return res, nil
}
