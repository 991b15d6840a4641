package world

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"

	"github.com/jackc/pgx/v5"
	corev1 "k8s.io/api/core/v1"
)

// ConnectPassword connects to the server by its DNS name with
// sslmode=verify-full, trusting rootCA, authenticating with a password.
func ConnectPassword(ctx context.Context, dnsName, user, password, dbname string, rootCA []byte) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=5432 dbname=%s sslmode=verify-full connect_timeout=5", dnsName, dbname))
	if err != nil {
		return nil, err
	}
	cfg.User, cfg.Password = user, password
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(rootCA) {
		return nil, fmt.Errorf("no CA certificate in rootCA")
	}
	cfg.TLSConfig.RootCAs = pool
	cfg.Fallbacks = nil
	return pgx.ConnectConfig(ctx, cfg)
}

// ConnectTLS connects to the server by its DNS name with sslmode=verify-full,
// trusting rootCA and presenting the client certificate of clientSecret (a
// kubernetes.io/tls Secret, e.g. written by cert-manager).
func ConnectTLS(ctx context.Context, dnsName, user string, rootCA []byte, clientSecret *corev1.Secret) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=5432 user=%s dbname=postgres sslmode=verify-full connect_timeout=5", dnsName, user))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(rootCA) {
		return nil, fmt.Errorf("no CA certificate in rootCA")
	}
	cert, err := tls.X509KeyPair(clientSecret.Data[corev1.TLSCertKey], clientSecret.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return nil, err
	}
	// verify-full: pgx has already set ServerName to dnsName and full
	// verification; only the roots and the client certificate are ours.
	cfg.TLSConfig.RootCAs = pool
	cfg.TLSConfig.Certificates = []tls.Certificate{cert}
	cfg.Fallbacks = nil
	return pgx.ConnectConfig(ctx, cfg)
}
