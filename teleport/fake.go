package teleport

import (
	"context"
	"regexp"
	"sort"
	"sync"

	"github.com/gravitational/teleport/api/types"
	"github.com/gravitational/trace"
)

// Fake is an in-memory Teleport with the semantics the controller depends
// on: NotFound, AlreadyExists, BadParameter for invalid resources, reads that
// may lag writes (Teleport's cache), label-scoped access like a
// least-privilege role, the db / db_client CAs, and fault injection.
// It is for table tests of the logic above Client; end-to-end tests use a
// real Teleport.
type Fake struct {
	mu    sync.Mutex
	dbs   map[string]types.Database
	stale map[string]types.Database // what reads return while StaleReads is on

	// StaleReads makes Get and List answer from the state before the last
	// write, as Teleport's cache does for up to a second.
	StaleReads bool
	// AllowedLabels, when set, scopes access like a role's db_labels:
	// resources without all of them are hidden from Get (AccessDenied) and
	// List, and may not be created, updated or deleted (AccessDenied).
	AllowedLabels map[string]string
	// ClusterName answers Ping.
	ClusterName string
	// DBCA and DBClientCA are the certificates (PEM) of the db and db_client CAs.
	DBCA, DBClientCA [][]byte
	// SupportsDBClientCA is false for Teleport <= 14: asking for db_client
	// gives BadParameter.
	SupportsDBClientCA bool
	// Err, when set, is returned by every call (e.g. trace.ConnectionProblem).
	Err error

	// Creates, Updates and Deletes count successful writes.
	Creates, Updates, Deletes int
}

// NewFake returns an empty fake of a Teleport 13 cluster named "fake".
func NewFake() *Fake {
	return &Fake{dbs: map[string]types.Database{}, ClusterName: "fake"}
}

var dbNameRe = regexp.MustCompile(`^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$`)

// Add stores a resource as an admin would, bypassing access checks.
func (f *Fake) Add(db types.Database) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snapshot()
	f.dbs[db.GetName()] = db.Copy()
}

// Writes is the number of successful creates, updates and deletes.
func (f *Fake) Writes() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.Creates + f.Updates + f.Deletes
}

// Settle ends the read lag: reads see every write so far.
func (f *Fake) Settle() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stale = nil
}

func (f *Fake) snapshot() {
	if f.StaleReads && f.stale == nil {
		f.stale = make(map[string]types.Database, len(f.dbs))
		for k, v := range f.dbs {
			f.stale[k] = v
		}
	}
}

func (f *Fake) readView() map[string]types.Database {
	if f.StaleReads && f.stale != nil {
		return f.stale
	}
	return f.dbs
}

func (f *Fake) allowed(db types.Database) bool {
	for k, v := range f.AllowedLabels {
		if db.GetStaticLabels()[k] != v {
			return false
		}
	}
	return true
}

// Ping answers with the cluster name.
func (f *Fake) Ping(context.Context) (ClusterInfo, error) {
	if f.Err != nil {
		return ClusterInfo{}, f.Err
	}
	return ClusterInfo{Name: f.ClusterName, ServerVersion: "13.3.8"}, nil
}

// GetDatabase returns a copy, NotFound, or AccessDenied outside AllowedLabels.
func (f *Fake) GetDatabase(_ context.Context, name string) (types.Database, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return nil, f.Err
	}
	db, ok := f.readView()[name]
	if !ok {
		return nil, trace.NotFound("database %q doesn't exist", name)
	}
	if !f.allowed(db) {
		return nil, trace.AccessDenied("access to db denied")
	}
	return db.Copy(), nil
}

// ListDatabases returns copies of the visible resources, sorted by name.
func (f *Fake) ListDatabases(context.Context) ([]types.Database, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return nil, f.Err
	}
	var out []types.Database
	for _, db := range f.readView() {
		if f.allowed(db) {
			out = append(out, db.Copy())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out, nil
}

func (f *Fake) check(db types.Database) error {
	c := db.Copy()
	if err := c.CheckAndSetDefaults(); err != nil {
		return trace.BadParameter("invalid database: %v", err)
	}
	if !dbNameRe.MatchString(c.GetName()) {
		return trace.BadParameter("invalid database name %q", c.GetName())
	}
	if !f.allowed(c) {
		return trace.AccessDenied("access to db denied")
	}
	return nil
}

// CreateDatabase stores a copy; AlreadyExists when the name is taken, even
// by a resource the caller may not see.
func (f *Fake) CreateDatabase(_ context.Context, db types.Database) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return f.Err
	}
	if err := f.check(db); err != nil {
		return err
	}
	if _, ok := f.dbs[db.GetName()]; ok {
		return trace.AlreadyExists("database %q already exists", db.GetName())
	}
	f.snapshot()
	f.dbs[db.GetName()] = db.Copy()
	f.Creates++
	return nil
}

// UpdateDatabase replaces an existing resource; NotFound when missing.
func (f *Fake) UpdateDatabase(_ context.Context, db types.Database) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return f.Err
	}
	if err := f.check(db); err != nil {
		return err
	}
	cur, ok := f.dbs[db.GetName()]
	if !ok {
		return trace.NotFound("database %q doesn't exist", db.GetName())
	}
	if !f.allowed(cur) {
		return trace.AccessDenied("access to db denied")
	}
	f.snapshot()
	f.dbs[db.GetName()] = db.Copy()
	f.Updates++
	return nil
}

// DeleteDatabase removes a resource; NotFound when missing.
func (f *Fake) DeleteDatabase(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return f.Err
	}
	cur, ok := f.dbs[name]
	if !ok {
		return trace.NotFound("database %q doesn't exist", name)
	}
	if !f.allowed(cur) {
		return trace.AccessDenied("access to db denied")
	}
	f.snapshot()
	delete(f.dbs, name)
	f.Deletes++
	return nil
}

// DatabaseClientCAs runs the same selection as the real client over the fake's CAs.
func (f *Fake) DatabaseClientCAs(ctx context.Context) ([][]byte, error) {
	if f.Err != nil {
		return nil, f.Err
	}
	return databaseClientCAs(ctx, fakeCAs{f}, f.ClusterName)
}

type fakeCAs struct{ f *Fake }

func (g fakeCAs) GetCertAuthority(_ context.Context, id types.CertAuthID, _ bool) (types.CertAuthority, error) {
	var certs [][]byte
	switch id.Type {
	case types.DatabaseClientCA:
		if !g.f.SupportsDBClientCA {
			return nil, trace.BadParameter("%q authority type is not supported", id.Type)
		}
		certs = g.f.DBClientCA
	case types.DatabaseCA:
		certs = g.f.DBCA
	default:
		return nil, trace.BadParameter("unexpected CA type %q", id.Type)
	}
	if len(certs) == 0 {
		return nil, trace.NotFound("cert authority %q not found", id.Type)
	}
	return newCA(id, certs)
}

// newCA builds a CA resource whose first certificate is active and the
// others additional (a rotation in progress), with no private keys.
func newCA(id types.CertAuthID, certs [][]byte) (types.CertAuthority, error) {
	keys := types.CAKeySet{}
	for _, c := range certs[:1] {
		keys.TLS = append(keys.TLS, &types.TLSKeyPair{Cert: c})
	}
	extra := types.CAKeySet{}
	for _, c := range certs[1:] {
		extra.TLS = append(extra.TLS, &types.TLSKeyPair{Cert: c})
	}
	return types.NewCertAuthority(types.CertAuthoritySpecV2{
		Type: id.Type, ClusterName: id.DomainName, ActiveKeys: keys, AdditionalTrustedKeys: extra,
	})
}
