package teleporttest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/gravitational/teleport/api/types"
	"github.com/gravitational/trace"

	"github.com/cnpg-teleport/cnpg-teleport/teleport"
)

// step is one call on a Fake and the error kind it must give (nil: success).
// Steps that check state return a plain error on a mismatch.
type step struct {
	do   func(ctx context.Context, f *Fake) error
	want func(error) bool
}

func ok(do func(ctx context.Context, f *Fake) error) step { return step{do: do} }

func create(db types.Database) func(context.Context, *Fake) error {
	return func(ctx context.Context, f *Fake) error { return f.CreateDatabase(ctx, db) }
}

func update(db types.Database) func(context.Context, *Fake) error {
	return func(ctx context.Context, f *Fake) error { return f.UpdateDatabase(ctx, db) }
}

func del(name string) func(context.Context, *Fake) error {
	return func(ctx context.Context, f *Fake) error { return f.DeleteDatabase(ctx, name) }
}

func get(name string) func(context.Context, *Fake) error {
	return func(ctx context.Context, f *Fake) error { _, err := f.GetDatabase(ctx, name); return err }
}

// getURI checks that Get returns name with uri.
func getURI(name, uri string) func(context.Context, *Fake) error {
	return func(ctx context.Context, f *Fake) error {
		db, err := f.GetDatabase(ctx, name)
		if err != nil {
			return err
		}
		if db.GetURI() != uri {
			return fmt.Errorf("get %s: uri %q, want %q", name, db.GetURI(), uri)
		}
		return nil
	}
}

// list checks that List returns exactly names, in order.
func list(names ...string) func(context.Context, *Fake) error {
	return func(ctx context.Context, f *Fake) error {
		dbs, err := f.ListDatabases(ctx)
		if err != nil {
			return err
		}
		var got []string
		for _, db := range dbs {
			got = append(got, db.GetName())
		}
		if !slices.Equal(got, names) {
			return fmt.Errorf("list = %v, want %v", got, names)
		}
		return nil
	}
}

func lag(n int) func(context.Context, *Fake) error {
	return func(_ context.Context, f *Fake) error { f.SetReadLag(n); return nil }
}

// withURI is db with another URI, to tell versions apart.
func withURI(db *types.DatabaseV3, uri string) *types.DatabaseV3 {
	cp := db.Copy()
	cp.SetURI(uri)
	return cp
}

func TestFakeSemantics(t *testing.T) {
	own := map[string]string{"owner": "me"}
	a := newDB(t, "a", own)
	b := newDB(t, "b", own)
	c := newDB(t, "c", own)
	foreign := newDB(t, "foreign", map[string]string{"owner": "them"})
	raw := &types.DatabaseV3{ // no defaults set: the Fake must run CheckAndSetDefaults
		Metadata: types.Metadata{Name: "raw"},
		Spec:     types.DatabaseSpecV3{Protocol: "postgres", URI: "raw:5432"},
	}
	invalid := func(mutate func(*types.DatabaseV3)) *types.DatabaseV3 {
		cp := a.Copy()
		mutate(cp)
		return cp
	}

	tests := []struct {
		name  string
		cfg   FakeConfig
		steps []step
	}{{
		name: "NotFound for get, update and delete of a missing name",
		steps: []step{
			{get("a"), trace.IsNotFound},
			{update(a), trace.IsNotFound},
			{del("a"), trace.IsNotFound},
			ok(list()),
		},
	}, {
		name: "create, get, AlreadyExists on a second create",
		steps: []step{
			ok(create(a)),
			ok(getURI("a", a.GetURI())),
			{create(withURI(a, "other:5432")), trace.IsAlreadyExists},
			ok(getURI("a", a.GetURI())),
			ok(list("a")),
		},
	}, {
		name: "update replaces, delete removes",
		steps: []step{
			ok(create(a)),
			ok(update(withURI(a, "new:5432"))),
			ok(getURI("a", "new:5432")),
			ok(del("a")),
			{get("a"), trace.IsNotFound},
			{del("a"), trace.IsNotFound},
			{update(a), trace.IsNotFound},
			ok(create(a)),
		},
	}, {
		name: "CheckAndSetDefaults runs on writes",
		steps: []step{
			ok(create(raw)),
			ok(getURI("raw", "raw:5432")),
		},
	}, {
		name: "invalid resources are BadParameter and change nothing",
		steps: []step{
			{create(invalid(func(d *types.DatabaseV3) { d.SetName("1-starts-with-digit") })), trace.IsBadParameter},
			{create(invalid(func(d *types.DatabaseV3) { d.SetName("under_score") })), trace.IsBadParameter},
			{create(invalid(func(d *types.DatabaseV3) { d.SetName("ends-with-dash-") })), trace.IsBadParameter},
			{create(invalid(func(d *types.DatabaseV3) { d.SetName("dot.ted") })), trace.IsBadParameter},
			{create(invalid(func(d *types.DatabaseV3) { d.SetName("") })), trace.IsBadParameter},
			{create(invalid(func(d *types.DatabaseV3) { d.Spec.Protocol = "" })), trace.IsBadParameter},
			{create(invalid(func(d *types.DatabaseV3) { d.Spec.URI = "" })), trace.IsBadParameter},
			{create(invalid(func(d *types.DatabaseV3) { d.Metadata.Labels = map[string]string{"bad key!": "x"} })), trace.IsBadParameter},
			{create(nil), trace.IsBadParameter},
			{create((*types.DatabaseV3)(nil)), trace.IsBadParameter},
			ok(list()),
			ok(create(a)),
			{update(invalid(func(d *types.DatabaseV3) { d.Spec.URI = "" })), trace.IsBadParameter},
			ok(getURI("a", a.GetURI())),
		},
	}, {
		name: "read lag: reads trail writes, writes act on the current state",
		steps: []step{
			ok(lag(1)),
			ok(create(a)),
			{get("a"), trace.IsNotFound}, // the cache has not seen it yet
			ok(list()),
			{create(a), trace.IsAlreadyExists}, // the backend has
			ok(create(b)),
			ok(getURI("a", a.GetURI())),
			{get("b"), trace.IsNotFound},
			ok(list("a")),
			ok(update(withURI(a, "new:5432"))),
			ok(getURI("a", a.GetURI())), // still the old version
			ok(del("a")),
			ok(getURI("a", "new:5432")), // deleted, still readable
			{update(a), trace.IsNotFound},
			{del("a"), trace.IsNotFound},
			ok(lag(0)),
			{get("a"), trace.IsNotFound},
			ok(list("b")),
		},
	}, {
		name: "read lag of several writes",
		steps: []step{
			ok(lag(2)),
			ok(create(a)),
			ok(create(b)),
			ok(list()),
			ok(create(c)),
			ok(list("a")),
			ok(lag(0)),
			ok(list("a", "b", "c")),
		},
	}, {
		name: "access control: a foreign db is hidden but still takes its name",
		cfg:  FakeConfig{AllowedLabels: own, Databases: []types.Database{foreign}},
		steps: []step{
			{get("foreign"), trace.IsAccessDenied},
			ok(list()),
			{create(withOwner(foreign, own)), trace.IsAlreadyExists},
			{update(withOwner(foreign, own)), trace.IsAccessDenied},
			{del("foreign"), trace.IsAccessDenied},
			{create(newDB(t, "x", map[string]string{"owner": "them"})), trace.IsAccessDenied},
			{create(newDB(t, "y", nil)), trace.IsAccessDenied},
			ok(create(a)),
			{update(withOwner(a, map[string]string{"owner": "them"})), trace.IsAccessDenied}, // may not give it away
			ok(list("a")),
		},
	}, {
		name: "access control: hidden as NotFound",
		cfg:  FakeConfig{AllowedLabels: own, HiddenAsNotFound: true, Databases: []types.Database{foreign}},
		steps: []step{
			{get("foreign"), trace.IsNotFound},
			{create(withOwner(foreign, own)), trace.IsAlreadyExists},
			{del("foreign"), trace.IsAccessDenied},
		},
	}, {
		name: "access control: wildcards",
		cfg:  FakeConfig{AllowedLabels: map[string]string{"owner": types.Wildcard}, Databases: []types.Database{foreign}},
		steps: []step{
			ok(get("foreign")),
			{create(newDB(t, "y", nil)), trace.IsAccessDenied},
			ok(create(a)),
			ok(list("a", "foreign")),
		},
	}, {
		name: "access control: all",
		cfg:  FakeConfig{AllowedLabels: map[string]string{types.Wildcard: types.Wildcard}},
		steps: []step{
			ok(create(newDB(t, "y", nil))),
			ok(get("y")),
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			f := NewFake(tt.cfg)
			for i, s := range tt.steps {
				err := s.do(ctx, f)
				switch {
				case s.want == nil && err != nil:
					t.Fatalf("step %d: %v", i, err)
				case s.want != nil && !s.want(err):
					t.Fatalf("step %d: error %v has the wrong kind", i, err)
				}
			}
		})
	}
}

func withOwner(db *types.DatabaseV3, labels map[string]string) *types.DatabaseV3 {
	cp := db.Copy()
	cp.SetStaticLabels(labels)
	return cp
}

func TestFakeKeepsCopies(t *testing.T) {
	ctx := context.Background()
	f := NewFake(FakeConfig{})
	a := newDB(t, "a", map[string]string{"owner": "me"})
	uri := a.GetURI()
	raw := &types.DatabaseV3{Metadata: types.Metadata{Name: "raw"}, Spec: types.DatabaseSpecV3{Protocol: "postgres", URI: "raw:5432"}}

	if err := f.CreateDatabase(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := f.CreateDatabase(ctx, raw); err != nil {
		t.Fatal(err)
	}
	a.SetURI("caller-changed:5432")
	a.Metadata.Labels["owner"] = "caller"
	if raw.Kind != "" || raw.GetRevision() != "" {
		t.Errorf("Create changed the caller's object: kind %q, revision %q", raw.Kind, raw.GetRevision())
	}

	got, err := f.GetDatabase(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if got.GetURI() != uri || got.GetStaticLabels()["owner"] != "me" {
		t.Fatalf("the store follows the caller's object: %s %v", got.GetURI(), got.GetStaticLabels())
	}
	got.SetURI("reader-changed:5432")
	listed, err := f.ListDatabases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	listed[0].Labels["owner"] = "lister-changed"
	if s, _ := f.Stored("a"); s.GetURI() != uri || s.GetStaticLabels()["owner"] != "me" {
		t.Fatalf("the store follows a returned object: %s %v", s.GetURI(), s.GetStaticLabels())
	}
	if s, _ := f.Stored("raw"); s.GetKind() != types.KindDatabase {
		t.Errorf("stored object has no defaults: kind %q", s.GetKind())
	}
}

func TestFakeRevisions(t *testing.T) {
	ctx := context.Background()
	f := NewFake(FakeConfig{})
	a := newDB(t, "a", nil)
	if err := f.CreateDatabase(ctx, a); err != nil {
		t.Fatal(err)
	}
	first, _ := f.GetDatabase(ctx, "a")
	if err := f.UpdateDatabase(ctx, first); err != nil {
		t.Fatal(err)
	}
	second, _ := f.GetDatabase(ctx, "a")
	if first.GetRevision() == "" || first.GetRevision() == second.GetRevision() {
		t.Fatalf("revisions %q then %q: want set and changing on each write", first.GetRevision(), second.GetRevision())
	}
}

func TestFakeCountersAndCalls(t *testing.T) {
	ctx := context.Background()
	f := NewFake(FakeConfig{Databases: []types.Database{newDB(t, "seed", nil)}})
	a := newDB(t, "a", nil)
	_ = f.CreateDatabase(ctx, a)
	_ = f.CreateDatabase(ctx, a) // AlreadyExists: not counted
	_ = f.UpdateDatabase(ctx, a)
	_ = f.UpdateDatabase(ctx, newDB(t, "missing", nil)) // NotFound: not counted
	_ = f.DeleteDatabase(ctx, "a")
	_ = f.DeleteDatabase(ctx, "seed")
	_, _ = f.GetDatabase(ctx, "a")

	if got := [3]int{f.Creates(), f.Updates(), f.Deletes()}; got != [3]int{1, 1, 2} {
		t.Errorf("creates, updates, deletes = %v, want [1 1 2] (seeding and failures not counted)", got)
	}
	calls := f.Calls()
	want := []struct {
		method, name string
		kind         func(error) bool
	}{
		{"CreateDatabase", "a", nil},
		{"CreateDatabase", "a", trace.IsAlreadyExists},
		{"UpdateDatabase", "a", nil},
		{"UpdateDatabase", "missing", trace.IsNotFound},
		{"DeleteDatabase", "a", nil},
		{"DeleteDatabase", "seed", nil},
		{"GetDatabase", "a", trace.IsNotFound},
	}
	if len(calls) != len(want) {
		t.Fatalf("calls = %+v, want %d", calls, len(want))
	}
	for i, w := range want {
		c := calls[i]
		if c.Method != w.method || c.Name != w.name || (w.kind == nil) != (c.Err == nil) || (w.kind != nil && !w.kind(c.Err)) {
			t.Errorf("call %d = %+v, want %s %s", i, c, w.method, w.name)
		}
	}
}

func TestFakeFaults(t *testing.T) {
	ctx := context.Background()
	down := trace.ConnectionProblem(errors.New("connection refused"), "teleport is down")
	a := newDB(t, "a", nil)
	all := map[string]func(*Fake) error{
		"Ping":              func(f *Fake) error { _, err := f.Ping(ctx); return err },
		"GetDatabase":       func(f *Fake) error { _, err := f.GetDatabase(ctx, "a"); return err },
		"ListDatabases":     func(f *Fake) error { _, err := f.ListDatabases(ctx); return err },
		"CreateDatabase":    func(f *Fake) error { return f.CreateDatabase(ctx, newDB(t, "b", nil)) },
		"UpdateDatabase":    func(f *Fake) error { return f.UpdateDatabase(ctx, a) },
		"DeleteDatabase":    func(f *Fake) error { return f.DeleteDatabase(ctx, "a") },
		"DatabaseClientCAs": func(f *Fake) error { _, err := f.DatabaseClientCAs(ctx); return err },
	}
	newFake := func() *Fake {
		return NewFake(FakeConfig{DBCACerts: [][]byte{cert(t, "db")}, Databases: []types.Database{a}})
	}

	t.Run("unavailable", func(t *testing.T) {
		for name, call := range all {
			f := newFake()
			f.SetUnavailable(down)
			if err := call(f); !trace.IsConnectionProblem(err) {
				t.Errorf("%s: %v, want ConnectionProblem", name, err)
			}
			if f.Creates()+f.Updates()+f.Deletes() != 0 || !slices.Equal(f.StoredNames(), []string{"a"}) {
				t.Errorf("%s wrote while unavailable", name)
			}
			f.SetUnavailable(nil)
			if err := call(f); err != nil {
				t.Errorf("%s after recovery: %v", name, err)
			}
		}
	})
	t.Run("one method", func(t *testing.T) {
		f := newFake()
		f.SetError("ListDatabases", down)
		for name, call := range all {
			err := call(f)
			if (name == "ListDatabases") != trace.IsConnectionProblem(err) {
				t.Errorf("%s: %v", name, err)
			}
		}
		f.SetError("ListDatabases", nil)
		if _, err := f.ListDatabases(ctx); err != nil {
			t.Errorf("after clearing: %v", err)
		}
	})
	t.Run("hook fails the second create only", func(t *testing.T) {
		f := NewFake(FakeConfig{})
		n := 0
		f.SetHook(func(c Call) error {
			if c.Method != "CreateDatabase" {
				return nil
			}
			n++
			if n == 2 {
				return trace.LimitExceeded("rate limited")
			}
			return nil
		})
		errs := []error{
			f.CreateDatabase(ctx, newDB(t, "x", nil)),
			f.CreateDatabase(ctx, newDB(t, "y", nil)),
			f.CreateDatabase(ctx, newDB(t, "z", nil)),
		}
		if errs[0] != nil || !trace.IsLimitExceeded(errs[1]) || errs[2] != nil {
			t.Fatalf("errors = %v", errs)
		}
		if got := f.StoredNames(); !slices.Equal(got, []string{"x", "z"}) {
			t.Fatalf("stored %v", got)
		}
	})
	t.Run("after hook acts between two calls", func(t *testing.T) {
		f := newFake()
		f.SetAfterHook(func(c Call) {
			if c.Method == "ListDatabases" && c.Err == nil {
				f.SetAfterHook(nil)
				if err := f.DeleteDatabase(ctx, "a"); err != nil {
					t.Errorf("delete from the hook: %v", err)
				}
			}
		})
		listed, err := f.ListDatabases(ctx)
		if err != nil || len(listed) != 1 {
			t.Fatalf("list = %v, %v; want a", listed, err)
		}
		if err := f.DeleteDatabase(ctx, "a"); !trace.IsNotFound(err) {
			t.Fatalf("delete after the hook's: %v, want NotFound", err)
		}
	})
	t.Run("cancelled context", func(t *testing.T) {
		f := newFake()
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := f.GetDatabase(cctx, "a"); !errors.Is(err, context.Canceled) {
			t.Fatalf("get with a cancelled context: %v", err)
		}
	})
}

func TestFakeCAs(t *testing.T) {
	db1, db2, dbc := cert(t, "db-1"), cert(t, "db-2"), cert(t, "db_client")
	tests := []struct {
		name    string
		cfg     FakeConfig
		fault   error // on GetCertAuthority
		want    []string
		wantErr func(error) bool
	}{
		{name: "Teleport <= 14: db", cfg: FakeConfig{DBCACerts: [][]byte{db1}, DBClientCACerts: [][]byte{dbc}}, want: []string{"db-1"}},
		{name: "Teleport >= 15: db_client", cfg: FakeConfig{SupportsDBClientCA: true, DBCACerts: [][]byte{db1}, DBClientCACerts: [][]byte{dbc}}, want: []string{"db_client"}},
		{name: "db_client supported but absent: db", cfg: FakeConfig{SupportsDBClientCA: true, DBCACerts: [][]byte{db1}}, want: []string{"db-1"}},
		{name: "rotation: both db key pairs", cfg: FakeConfig{DBCACerts: [][]byte{db1, db2}}, want: []string{"db-1", "db-2"}},
		{name: "no CA at all: NotFound", cfg: FakeConfig{}, wantErr: trace.IsNotFound},
		{name: "role without cert_authority read: AccessDenied", cfg: FakeConfig{DBCACerts: [][]byte{db1}}, fault: trace.AccessDenied("denied"), wantErr: trace.IsAccessDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFake(tt.cfg)
			if tt.fault != nil {
				f.SetError("GetCertAuthority", tt.fault)
			}
			got, err := f.DatabaseClientCAs(context.Background())
			switch {
			case tt.wantErr != nil && !tt.wantErr(err):
				t.Fatalf("error = %v, wrong kind", err)
			case tt.wantErr == nil && err != nil:
				t.Fatal(err)
			}
			if names := commonNames(t, got); !slices.Equal(names, tt.want) {
				t.Errorf("certificates = %v, want %v", names, tt.want)
			}
		})
	}

	t.Run("GetCertAuthority errors like Teleport", func(t *testing.T) {
		ctx := context.Background()
		old := NewFake(FakeConfig{ClusterName: "c", DBCACerts: [][]byte{db1}})
		if _, err := old.GetCertAuthority(ctx, types.CertAuthID{Type: types.DatabaseClientCA, DomainName: "c"}, false); !trace.IsBadParameter(err) {
			t.Errorf("db_client on Teleport <= 14: %v, want BadParameter", err)
		}
		if _, err := old.GetCertAuthority(ctx, types.CertAuthID{Type: types.DatabaseCA, DomainName: "other"}, false); !trace.IsNotFound(err) {
			t.Errorf("another cluster's CA: %v, want NotFound", err)
		}
		if _, err := old.GetCertAuthority(ctx, types.CertAuthID{Type: "nonsense", DomainName: "c"}, false); !trace.IsBadParameter(err) {
			t.Errorf("unknown CA type: %v, want BadParameter", err)
		}
		ca, err := old.GetCertAuthority(ctx, types.CertAuthID{Type: types.DatabaseCA, DomainName: "c"}, false)
		if err != nil {
			t.Fatal(err)
		}
		if ca.GetType() != types.DatabaseCA || ca.GetClusterName() != "c" || len(ca.GetTrustedTLSKeyPairs()) != 1 {
			t.Errorf("CA = %v", ca)
		}
	})

	t.Run("rotation at runtime", func(t *testing.T) {
		f := NewFake(FakeConfig{DBCACerts: [][]byte{db1}})
		f.SetCACerts(types.DatabaseCA, [][]byte{db2, db1})
		got, err := f.DatabaseClientCAs(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if names := commonNames(t, got); !slices.Equal(names, []string{"db-2", "db-1"}) {
			t.Errorf("certificates = %v", names)
		}
	})
}

func TestFakePing(t *testing.T) {
	for _, tt := range []struct {
		cfg  FakeConfig
		want teleport.ClusterInfo
	}{
		{FakeConfig{}, teleport.ClusterInfo{Name: "fake.teleport", ServerVersion: "14.0.0"}},
		{FakeConfig{SupportsDBClientCA: true}, teleport.ClusterInfo{Name: "fake.teleport", ServerVersion: "15.0.0"}},
		{FakeConfig{ClusterName: "c", ServerVersion: "13.3.8"}, teleport.ClusterInfo{Name: "c", ServerVersion: "13.3.8"}},
	} {
		got, err := NewFake(tt.cfg).Ping(context.Background())
		if err != nil || got != tt.want {
			t.Errorf("%+v: Ping = %+v, %v; want %+v", tt.cfg, got, err, tt.want)
		}
	}
}

func TestFakeSeedPanicsOnInvalid(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("NewFake accepted an invalid seed")
		}
	}()
	bad := newDB(t, "a", nil)
	bad.SetName("not_valid")
	NewFake(FakeConfig{Databases: []types.Database{bad}})
}

// TestFakeConcurrent is for `go test -race`: the controller calls from several workers.
func TestFakeConcurrent(t *testing.T) {
	ctx := context.Background()
	f := NewFake(FakeConfig{})
	f.SetReadLag(1)
	var dbs []*types.DatabaseV3
	for i := range 8 {
		dbs = append(dbs, newDB(t, fmt.Sprintf("db%d", i), nil))
	}
	var wg sync.WaitGroup
	for _, db := range dbs {
		wg.Go(func() {
			_ = f.CreateDatabase(ctx, db)
			_, _ = f.GetDatabase(ctx, db.GetName())
			_, _ = f.ListDatabases(ctx)
			_ = f.DeleteDatabase(ctx, db.GetName())
		})
	}
	wg.Wait()
	if f.Creates() != 8 || f.Deletes() != 8 || len(f.StoredNames()) != 0 {
		t.Fatalf("creates %d, deletes %d, left %v", f.Creates(), f.Deletes(), f.StoredNames())
	}
}
