package teleport

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"slices"
	"testing"

	"github.com/gravitational/teleport/api/types"
	"github.com/gravitational/trace"
)

// stubCA is one CA a stubGetter serves: key pairs as the auth server stores
// them, private keys included, so the tests show they never leak.
type stubCA struct {
	active, additional []*types.TLSKeyPair
	err                error
}

// stubGetter answers GetCertAuthority per CA type and records what was asked.
type stubGetter struct {
	cas      map[types.CertAuthType]stubCA
	asked    []types.CertAuthType
	loadKeys bool
}

func (g *stubGetter) GetCertAuthority(_ context.Context, id types.CertAuthID, loadKeys bool) (types.CertAuthority, error) {
	g.asked = append(g.asked, id.Type)
	g.loadKeys = g.loadKeys || loadKeys
	s, ok := g.cas[id.Type]
	if !ok {
		return nil, trace.NotFound("no %s CA in this stub", id.Type)
	}
	if s.err != nil {
		return nil, s.err
	}
	return &types.CertAuthorityV2{
		Kind: types.KindCertAuthority, Version: types.V2,
		Metadata: types.Metadata{Name: id.DomainName},
		Spec: types.CertAuthoritySpecV2{
			Type: id.Type, ClusterName: id.DomainName,
			ActiveKeys:            types.CAKeySet{TLS: s.active},
			AdditionalTrustedKeys: types.CAKeySet{TLS: s.additional},
		},
	}, nil
}

func TestDatabaseClientCAs(t *testing.T) {
	dbClient, dbClientKey := newCert(t, "db_client")
	dbActive, dbActiveKey := newCert(t, "db-active")
	dbNext, dbNextKey := newCert(t, "db-next")
	pair := func(c, k []byte) *types.TLSKeyPair {
		return &types.TLSKeyPair{Cert: c, Key: k, KeyType: types.PrivateKeyType_RAW}
	}
	dbCA := stubCA{active: []*types.TLSKeyPair{pair(dbActive, dbActiveKey)}}
	unsupported := stubCA{err: trace.BadParameter(`"db_client" authority type is not supported`)}
	keys := [][]byte{dbClientKey, dbActiveKey, dbNextKey}

	tests := []struct {
		name      string
		cas       map[types.CertAuthType]stubCA
		cluster   string
		want      []string // common names, in order
		wantAsked []types.CertAuthType
		wantErr   func(error) bool
	}{{
		name: "db_client supported (Teleport >= 15): db_client",
		cas: map[types.CertAuthType]stubCA{
			types.DatabaseClientCA: {active: []*types.TLSKeyPair{pair(dbClient, dbClientKey)}},
			types.DatabaseCA:       dbCA,
		},
		want:      []string{"db_client"},
		wantAsked: []types.CertAuthType{types.DatabaseClientCA},
	}, {
		name:      "BadParameter (Teleport <= 14): falls back to db",
		cas:       map[types.CertAuthType]stubCA{types.DatabaseClientCA: unsupported, types.DatabaseCA: dbCA},
		want:      []string{"db-active"},
		wantAsked: []types.CertAuthType{types.DatabaseClientCA, types.DatabaseCA},
	}, {
		name:      "NotFound: falls back to db",
		cas:       map[types.CertAuthType]stubCA{types.DatabaseCA: dbCA},
		want:      []string{"db-active"},
		wantAsked: []types.CertAuthType{types.DatabaseClientCA, types.DatabaseCA},
	}, {
		name: "AccessDenied: error, no fallback",
		cas: map[types.CertAuthType]stubCA{
			types.DatabaseClientCA: {err: trace.AccessDenied("access denied to perform action readnosecrets on cert_authority")},
			types.DatabaseCA:       dbCA,
		},
		wantAsked: []types.CertAuthType{types.DatabaseClientCA},
		wantErr:   trace.IsAccessDenied,
	}, {
		name: "ConnectionProblem: error, no fallback",
		cas: map[types.CertAuthType]stubCA{
			types.DatabaseClientCA: {err: trace.ConnectionProblem(errors.New("EOF"), "connection lost")},
			types.DatabaseCA:       dbCA,
		},
		wantAsked: []types.CertAuthType{types.DatabaseClientCA},
		wantErr:   trace.IsConnectionProblem,
	}, {
		name:      "fallback fails too: its error, kind kept",
		cas:       map[types.CertAuthType]stubCA{types.DatabaseClientCA: unsupported, types.DatabaseCA: {err: trace.AccessDenied("no")}},
		wantAsked: []types.CertAuthType{types.DatabaseClientCA, types.DatabaseCA},
		wantErr:   trace.IsAccessDenied,
	}, {
		name:      "neither exists: NotFound",
		cas:       map[types.CertAuthType]stubCA{},
		wantAsked: []types.CertAuthType{types.DatabaseClientCA, types.DatabaseCA},
		wantErr:   trace.IsNotFound,
	}, {
		name: "rotation: active and additional key pairs, active first",
		cas: map[types.CertAuthType]stubCA{types.DatabaseClientCA: unsupported, types.DatabaseCA: {
			active:     []*types.TLSKeyPair{pair(dbActive, dbActiveKey)},
			additional: []*types.TLSKeyPair{pair(dbNext, dbNextKey)},
		}},
		want:      []string{"db-active", "db-next"},
		wantAsked: []types.CertAuthType{types.DatabaseClientCA, types.DatabaseCA},
	}, {
		name: "the same certificate twice is returned once",
		cas: map[types.CertAuthType]stubCA{types.DatabaseClientCA: {
			active:     []*types.TLSKeyPair{pair(dbClient, dbClientKey), pair(dbActive, dbActiveKey)},
			additional: []*types.TLSKeyPair{pair(dbClient, nil), pair(dbActive, dbActiveKey)},
		}},
		want:      []string{"db_client", "db-active"},
		wantAsked: []types.CertAuthType{types.DatabaseClientCA},
	}, {
		name: "a key pair whose Cert carries a private key: only the certificate comes out",
		cas: map[types.CertAuthType]stubCA{types.DatabaseClientCA: {
			active: []*types.TLSKeyPair{pair(slices.Concat(dbClientKey, dbClient, dbActiveKey), dbClientKey)},
		}},
		want:      []string{"db_client"},
		wantAsked: []types.CertAuthType{types.DatabaseClientCA},
	}, {
		name: "a bundle in one key pair: every certificate",
		cas: map[types.CertAuthType]stubCA{types.DatabaseClientCA: {
			active: []*types.TLSKeyPair{pair(slices.Concat(dbActive, dbNext), nil)},
		}},
		want:      []string{"db-active", "db-next"},
		wantAsked: []types.CertAuthType{types.DatabaseClientCA},
	}, {
		name: "a key pair without a PEM certificate: BadParameter",
		cas: map[types.CertAuthType]stubCA{types.DatabaseClientCA: {
			active: []*types.TLSKeyPair{pair([]byte("not pem"), nil)},
		}},
		wantAsked: []types.CertAuthType{types.DatabaseClientCA},
		wantErr:   trace.IsBadParameter,
	}, {
		name: "a CERTIFICATE block that does not parse: BadParameter",
		cas: map[types.CertAuthType]stubCA{types.DatabaseClientCA: {
			active: []*types.TLSKeyPair{pair(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")}), nil)},
		}},
		wantAsked: []types.CertAuthType{types.DatabaseClientCA},
		wantErr:   trace.IsBadParameter,
	}, {
		name:      "a CA without TLS key pairs: NotFound",
		cas:       map[types.CertAuthType]stubCA{types.DatabaseClientCA: {}},
		wantAsked: []types.CertAuthType{types.DatabaseClientCA},
		wantErr:   trace.IsNotFound,
	}, {
		name:    "no cluster name: BadParameter, nothing asked",
		cas:     map[types.CertAuthType]stubCA{types.DatabaseCA: dbCA},
		cluster: "-",
		wantErr: trace.IsBadParameter,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &stubGetter{cas: tt.cas}
			cluster := "example.teleport"
			if tt.cluster == "-" {
				cluster = ""
			}
			got, err := DatabaseClientCAsFrom(context.Background(), g, cluster)
			switch {
			case tt.wantErr != nil && !tt.wantErr(err):
				t.Fatalf("error = %v, wrong kind", err)
			case tt.wantErr == nil && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case err != nil && got != nil:
				t.Fatalf("certificates %q returned with error %v", got, err)
			}
			if names := commonNames(t, got); !slices.Equal(names, tt.want) {
				t.Errorf("certificates = %v, want %v", names, tt.want)
			}
			if !slices.Equal(g.asked, tt.wantAsked) {
				t.Errorf("asked for %v, want %v", g.asked, tt.wantAsked)
			}
			if g.loadKeys {
				t.Error("asked for private keys")
			}
			assertOnlyCertificates(t, got, keys)
		})
	}
}

// assertOnlyCertificates fails when any output holds anything but
// CERTIFICATE blocks, or any byte of a private key.
func assertOnlyCertificates(t *testing.T, certs [][]byte, keys [][]byte) {
	t.Helper()
	for i, c := range certs {
		for rest := c; len(bytes.TrimSpace(rest)) > 0; {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				t.Fatalf("output %d has non-PEM bytes: %q", i, rest)
			}
			if b.Type != "CERTIFICATE" || len(b.Headers) != 0 {
				t.Errorf("output %d has a %q block", i, b.Type)
			}
		}
		for _, k := range keys {
			kb, _ := pem.Decode(k)
			if bytes.Contains(c, k) || bytes.Contains(c, kb.Bytes) {
				t.Errorf("output %d contains a private key", i)
			}
		}
	}
}

// TestDatabaseClientCAsOutputIsACopy checks that callers may keep or change
// the result without touching the CA it came from.
func TestDatabaseClientCAsOutputIsACopy(t *testing.T) {
	c := cert(t, "db_client")
	kp := &types.TLSKeyPair{Cert: slices.Clone(c)}
	g := &stubGetter{cas: map[types.CertAuthType]stubCA{types.DatabaseClientCA: {active: []*types.TLSKeyPair{kp}}}}
	got, err := DatabaseClientCAsFrom(context.Background(), g, "example.teleport")
	if err != nil {
		t.Fatal(err)
	}
	clear(got[0])
	if !bytes.Equal(kp.Cert, c) {
		t.Fatal("changing the output changed the CA's key pair")
	}
}
