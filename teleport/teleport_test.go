package teleport

import (
	"context"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gravitational/teleport/api/types"
	"github.com/gravitational/trace"
)

// getter answers GetCertAuthority per CA type with a CA or an error.
type getter struct {
	certs map[types.CertAuthType][][]byte
	errs  map[types.CertAuthType]error
	asked []types.CertAuthType
}

func (g *getter) GetCertAuthority(_ context.Context, id types.CertAuthID, loadKeys bool) (types.CertAuthority, error) {
	g.asked = append(g.asked, id.Type)
	if loadKeys {
		return nil, trace.AccessDenied("the controller never loads keys")
	}
	if err := g.errs[id.Type]; err != nil {
		return nil, err
	}
	return newCA(id, g.certs[id.Type])
}

func pemCert(s string) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte(s)})
}

func TestDatabaseClientCAs(t *testing.T) {
	dbc, db1, db2 := pemCert("dbclient"), pemCert("db1"), pemCert("db2")
	tests := []struct {
		name  string
		g     *getter
		want  [][]byte
		asked []types.CertAuthType
		err   func(error) bool
	}{
		{"db_client on Teleport >= 15", &getter{certs: map[types.CertAuthType][][]byte{types.DatabaseClientCA: {dbc}, types.DatabaseCA: {db1}}},
			[][]byte{dbc}, []types.CertAuthType{types.DatabaseClientCA}, nil},
		{"BadParameter (Teleport <= 14) falls back to db", &getter{
			certs: map[types.CertAuthType][][]byte{types.DatabaseCA: {db1}},
			errs:  map[types.CertAuthType]error{types.DatabaseClientCA: trace.BadParameter(`"db_client" authority type is not supported`)}},
			[][]byte{db1}, []types.CertAuthType{types.DatabaseClientCA, types.DatabaseCA}, nil},
		{"NotFound falls back to db", &getter{
			certs: map[types.CertAuthType][][]byte{types.DatabaseCA: {db1}},
			errs:  map[types.CertAuthType]error{types.DatabaseClientCA: trace.NotFound("no")}},
			[][]byte{db1}, []types.CertAuthType{types.DatabaseClientCA, types.DatabaseCA}, nil},
		{"AccessDenied is an error, no fallback", &getter{
			certs: map[types.CertAuthType][][]byte{types.DatabaseCA: {db1}},
			errs:  map[types.CertAuthType]error{types.DatabaseClientCA: trace.AccessDenied("no")}},
			nil, []types.CertAuthType{types.DatabaseClientCA}, trace.IsAccessDenied},
		{"rotation: active and additional, deduplicated", &getter{
			certs: map[types.CertAuthType][][]byte{types.DatabaseCA: {db1, db2, db1}},
			errs:  map[types.CertAuthType]error{types.DatabaseClientCA: trace.BadParameter("unsupported")}},
			[][]byte{db1, db2}, []types.CertAuthType{types.DatabaseClientCA, types.DatabaseCA}, nil},
		{"connection problem on db is returned with its kind", &getter{
			errs: map[types.CertAuthType]error{types.DatabaseClientCA: trace.NotFound("no"), types.DatabaseCA: trace.ConnectionProblem(errors.New("down"), "down")}},
			nil, []types.CertAuthType{types.DatabaseClientCA, types.DatabaseCA}, trace.IsConnectionProblem},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := databaseClientCAs(context.Background(), tt.g, "c")
			if tt.err != nil {
				if !tt.err(err) {
					t.Fatalf("error %v has the wrong kind", err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d certs, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if string(got[i]) != string(tt.want[i]) {
					t.Errorf("cert %d = %q, want %q", i, got[i], tt.want[i])
				}
				if b, _ := pem.Decode(got[i]); b == nil || b.Type != "CERTIFICATE" {
					t.Errorf("cert %d is not a CERTIFICATE block", i)
				}
			}
			if len(tt.g.asked) != len(tt.asked) {
				t.Fatalf("asked %v, want %v", tt.g.asked, tt.asked)
			}
		})
	}
}

func db(t *testing.T, name string, labels map[string]string) types.Database {
	t.Helper()
	d, err := types.NewDatabaseV3(types.Metadata{Name: name, Labels: labels}, types.DatabaseSpecV3{Protocol: "postgres", URI: "h:5432"})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestFakeSemantics(t *testing.T) {
	ctx := context.Background()
	f := NewFake()
	own := map[string]string{"owner": "me"}
	f.AllowedLabels = own

	if _, err := f.GetDatabase(ctx, "a"); !trace.IsNotFound(err) {
		t.Fatalf("get missing: %v", err)
	}
	a := db(t, "a", own)
	if err := f.CreateDatabase(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := f.CreateDatabase(ctx, a); !trace.IsAlreadyExists(err) {
		t.Fatalf("create twice: %v", err)
	}
	a.SetURI("changed:5432") // the store keeps its own copy
	if got, _ := f.GetDatabase(ctx, "a"); got.GetURI() != "h:5432" {
		t.Fatalf("store shares memory with the caller: %s", got.GetURI())
	}
	if err := f.UpdateDatabase(ctx, db(t, "missing", own)); !trace.IsNotFound(err) {
		t.Fatalf("update missing: %v", err)
	}
	if err := f.DeleteDatabase(ctx, "missing"); !trace.IsNotFound(err) {
		t.Fatalf("delete missing: %v", err)
	}
	bad := db(t, "ok", own)
	bad.SetName("1-bad")
	if err := f.CreateDatabase(ctx, bad); !trace.IsBadParameter(err) {
		t.Fatalf("invalid name: %v", err)
	}

	// A foreign resource: hidden, not creatable over, not deletable.
	f.Add(db(t, "foreign", map[string]string{"owner": "them"}))
	if _, err := f.GetDatabase(ctx, "foreign"); !trace.IsAccessDenied(err) {
		t.Fatalf("get foreign: %v", err)
	}
	if err := f.CreateDatabase(ctx, db(t, "foreign", own)); !trace.IsAlreadyExists(err) {
		t.Fatalf("create over foreign: %v", err)
	}
	if err := f.DeleteDatabase(ctx, "foreign"); !trace.IsAccessDenied(err) {
		t.Fatalf("delete foreign: %v", err)
	}
	if err := f.CreateDatabase(ctx, db(t, "outside", map[string]string{"owner": "them"})); !trace.IsAccessDenied(err) {
		t.Fatalf("create outside labels: %v", err)
	}
	list, _ := f.ListDatabases(ctx)
	if len(list) != 1 || list[0].GetName() != "a" {
		t.Fatalf("list = %v", list)
	}

	// Stale reads: a create is not visible until Settle.
	f.StaleReads = true
	if err := f.CreateDatabase(ctx, db(t, "b", own)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.GetDatabase(ctx, "b"); !trace.IsNotFound(err) {
		t.Fatalf("stale read should not see b yet: %v", err)
	}
	if err := f.CreateDatabase(ctx, db(t, "b", own)); !trace.IsAlreadyExists(err) {
		t.Fatalf("writes are not stale: %v", err)
	}
	f.Settle()
	if _, err := f.GetDatabase(ctx, "b"); err != nil {
		t.Fatalf("after settle: %v", err)
	}
	if f.Creates != 2 || f.Deletes != 0 || f.Updates != 0 {
		t.Fatalf("counters %d/%d/%d", f.Creates, f.Updates, f.Deletes)
	}

	f.Err = trace.ConnectionProblem(errors.New("down"), "down")
	if _, err := f.ListDatabases(ctx); !trace.IsConnectionProblem(err) {
		t.Fatalf("unavailable: %v", err)
	}
}

func TestConfigValidation(t *testing.T) {
	for _, tt := range []struct {
		cfg  Config
		want string
	}{
		{Config{IdentityFile: "x"}, ""},
		{Config{Addrs: []string{"a:3025"}}, ""},
		{Config{Addrs: []string{"a:3025"}, IdentityFile: "x", BotDir: "d"}, ""},
		{Config{Addrs: []string{"a:3025"}, IdentityFile: "x"}, "x"},
		{Config{Addrs: []string{"a:3025"}, BotDir: "d"}, "d/identity"},
	} {
		got, err := tt.cfg.identityPath()
		if tt.want == "" {
			if !trace.IsBadParameter(err) {
				t.Errorf("%+v: want BadParameter, got %q, %v", tt.cfg, got, err)
			}
		} else if got != tt.want || err != nil {
			t.Errorf("%+v: got %q, %v; want %q", tt.cfg, got, err, tt.want)
		}
	}
}

func TestWatchFileReloadsOnChange(t *testing.T) {
	p := filepath.Join(t.TempDir(), "identity")
	if err := os.WriteFile(p, []byte("v1"), 0o600); err != nil {
		t.Fatal(err)
	}
	var reloads atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		watchFile(ctx, p, 10*time.Millisecond, func() error { reloads.Add(1); return nil })
	}()
	time.Sleep(50 * time.Millisecond)
	if n := reloads.Load(); n != 0 {
		t.Fatalf("reloaded %d times without a change", n)
	}
	if err := os.WriteFile(p, []byte("v2"), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for reloads.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	cancel()
	<-done
	if n := reloads.Load(); n != 1 {
		t.Fatalf("reloads = %d, want exactly 1 for one change", n)
	}
}
