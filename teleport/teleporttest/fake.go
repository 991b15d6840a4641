// Package teleporttest holds Fake, an in-memory teleport.Client with
// Teleport's semantics for tests. It is a package of its own so the fake is
// never compiled into the controller binary.
package teleporttest

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"sync"

	"github.com/gravitational/teleport/api/types"
	"github.com/gravitational/trace"

	"github.com/cnpg-teleport/cnpg-teleport/teleport"
)

var _ teleport.Client = (*Fake)(nil)

// Fake is an in-memory Client with Teleport's semantics, for the controller's
// table tests: the error kinds a real auth server returns (NotFound,
// AlreadyExists, BadParameter from CheckAndSetDefaults, AccessDenied for what
// a least-privilege role may not touch), deep copies in and out, optional
// read lag like Teleport's cache, the db_client/db CA split between versions,
// fault injection, and counters to assert how many writes a pass made.
// It is safe for concurrent use.
type Fake struct {
	mu  sync.Mutex
	cfg FakeConfig

	// history holds the store after each write; the last entry is the
	// authoritative state that writes check against, reads see the entry
	// readLag writes older. Stored objects are never mutated, so snapshots
	// share them.
	history  []map[string]*types.DatabaseV3
	readLag  int
	revision int

	cas    map[types.CertAuthType][][]byte
	roles  []types.Role
	agents []map[string]string

	unavailable error
	methodErrs  map[string]error
	hook        func(Call) error
	after       func(Call)

	creates, updates, deletes int
	calls                     []Call
}

// FakeConfig describes the Teleport a Fake pretends to be.
type FakeConfig struct {
	// ClusterName is the cluster name and CA domain. Default "fake.teleport".
	ClusterName string
	// ServerVersion is what Ping reports. Default "15.0.0" when
	// SupportsDBClientCA, else "14.0.0".
	ServerVersion string
	// SupportsDBClientCA is false for Teleport <= 14: asking for the db_client
	// CA then fails with BadParameter `"db_client" authority type is not supported`.
	SupportsDBClientCA bool
	// DBCACerts are PEM certificates of the db CA: the first is the active
	// key pair, the rest additional trusted ones (a rotation in progress).
	// None: GetCertAuthority(db) returns NotFound.
	DBCACerts [][]byte
	// DBClientCACerts are the same for the db_client CA.
	DBClientCACerts [][]byte
	// AllowedLabels, when set, plays a role's db_labels: a db must carry
	// each key with that value ("*" as a value matches any value, "*": "*"
	// matches everything). Others are hidden: Get says AccessDenied (NotFound
	// with HiddenAsNotFound), List leaves them out, Update and Delete say
	// AccessDenied, and a Create of their name still says AlreadyExists.
	// Creating or updating a db that does not match is AccessDenied, as
	// Teleport checks db access on writes. Nil allows everything.
	AllowedLabels map[string]string
	// HiddenAsNotFound makes Get of a hidden db return NotFound instead of AccessDenied.
	HiddenAsNotFound bool
	// Databases are stored at start, as if created by someone else (no
	// counters, no access check). NewFake panics if one is invalid.
	Databases []types.Database
}

// Call is one recorded call to the Fake.
type Call struct {
	// Method is the Client method name, or GetCertAuthority.
	Method string
	// Name is the db name, or the CA type for GetCertAuthority.
	Name string
	// Err is what the call returned.
	Err error
}

// NewFake returns a Fake for cfg.
func NewFake(cfg FakeConfig) *Fake {
	if cfg.ClusterName == "" {
		cfg.ClusterName = "fake.teleport"
	}
	if cfg.ServerVersion == "" {
		cfg.ServerVersion = "14.0.0"
		if cfg.SupportsDBClientCA {
			cfg.ServerVersion = "15.0.0"
		}
	}
	cfg.AllowedLabels = maps.Clone(cfg.AllowedLabels)
	f := &Fake{
		cfg:        cfg,
		history:    []map[string]*types.DatabaseV3{{}},
		cas:        map[types.CertAuthType][][]byte{},
		methodErrs: map[string]error{},
	}
	f.SetCACerts(types.DatabaseCA, cfg.DBCACerts)
	f.SetCACerts(types.DatabaseClientCA, cfg.DBClientCACerts)
	for _, db := range cfg.Databases {
		if err := f.Put(db); err != nil {
			panic(err)
		}
	}
	f.cfg.Databases = nil
	return f
}

// Put stores db as if someone else had written it: validated, but not
// counted, not logged and not access-checked. It is a write for read lag.
func (f *Fake) Put(db types.Database) error {
	v3, err := checkedCopy(db)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.write(v3.GetName(), v3)
	return nil
}

// Stored returns a copy of the authoritative state of name, ignoring read
// lag and access control, for assertions.
func (f *Fake) Stored(name string) (types.Database, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	db, ok := f.current()[name]
	if !ok {
		return nil, false
	}
	return db.Copy(), true
}

// StoredNames lists the authoritative state's db names, sorted.
func (f *Fake) StoredNames() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.current()))
}

// SetReadLag makes Get and List see the state as it was writes writes ago,
// as Teleport's cache lags behind its backend (up to a second by default):
// after a Create, Get still says NotFound while another Create says
// AlreadyExists. Writes always act on the current state. 0 restores
// read-your-writes.
func (f *Fake) SetReadLag(writes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.readLag = max(writes, 0)
}

// SetUnavailable makes every call fail with err (e.g. trace.ConnectionProblem)
// until called with nil.
func (f *Fake) SetUnavailable(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unavailable = err
}

// SetError makes every call of method (a Client method name, or
// GetCertAuthority) fail with err until called with nil.
func (f *Fake) SetError(method string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.methodErrs, method)
		return
	}
	f.methodErrs[method] = err
}

// SetHook runs fn before every call (Err unset); a non-nil result is
// returned instead of doing the call. fn may call the Fake. nil removes it.
func (f *Fake) SetHook(fn func(Call) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hook = fn
}

// SetAfterHook runs fn after every call, with its result, once the call is
// done and the Fake unlocked: a test can act between two calls of the code
// under test (say, between its List and its Delete) without sleeping. fn may
// call the Fake (those calls run the after hook too). nil removes it.
func (f *Fake) SetAfterHook(fn func(Call)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.after = fn
}

// SetCACerts replaces the certificates of the db or db_client CA, e.g. to
// play a rotation: the first is active, the rest additional trusted.
func (f *Fake) SetCACerts(caType types.CertAuthType, certs [][]byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cp := make([][]byte, 0, len(certs))
	for _, c := range certs {
		cp = append(cp, slices.Clone(c))
	}
	f.cas[caType] = cp
}

// Creates counts successful CreateDatabase calls.
func (f *Fake) Creates() int { f.mu.Lock(); defer f.mu.Unlock(); return f.creates }

// Updates counts successful UpdateDatabase calls.
func (f *Fake) Updates() int { f.mu.Lock(); defer f.mu.Unlock(); return f.updates }

// Deletes counts successful DeleteDatabase calls.
func (f *Fake) Deletes() int { f.mu.Lock(); defer f.mu.Unlock(); return f.deletes }

// Calls returns every call so far, in order, with its result.
func (f *Fake) Calls() []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// Ping reports the configured cluster name and version.
func (f *Fake) Ping(ctx context.Context) (info teleport.ClusterInfo, err error) {
	defer f.record("Ping", "", &err)
	if err := f.guard(ctx, "Ping", ""); err != nil {
		return teleport.ClusterInfo{}, err
	}
	return teleport.ClusterInfo{Name: f.cfg.ClusterName, ServerVersion: f.cfg.ServerVersion}, nil
}

// GetDatabase returns a copy of name as the (possibly lagging) read view has it.
func (f *Fake) GetDatabase(ctx context.Context, name string) (db types.Database, err error) {
	defer f.record("GetDatabase", name, &err)
	if err := f.guard(ctx, "GetDatabase", name); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	got, ok := f.view()[name]
	switch {
	case !ok:
		return nil, trace.NotFound("database %q doesn't exist", name)
	case !f.allowed(got):
		if f.cfg.HiddenAsNotFound {
			return nil, trace.NotFound("database %q doesn't exist", name)
		}
		return nil, trace.AccessDenied("access to db denied")
	}
	return got.Copy(), nil
}

// ListDatabases returns the names and copies of the labels of the visible
// dbs of the read view, by name (as teleport.APIClient's list, no spec).
func (f *Fake) ListDatabases(ctx context.Context) (dbs []teleport.DatabaseMeta, err error) {
	defer f.record("ListDatabases", "", &err)
	if err := f.guard(ctx, "ListDatabases", ""); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	view := f.view()
	for _, name := range slices.Sorted(maps.Keys(view)) {
		if db := view[name]; f.allowed(db) {
			dbs = append(dbs, teleport.DatabaseMeta{Name: name, Labels: maps.Clone(db.GetStaticLabels())})
		}
	}
	return dbs, nil
}

// CreateDatabase stores a validated copy of db; AlreadyExists when the name
// is taken in the current state, visible or not.
func (f *Fake) CreateDatabase(ctx context.Context, db types.Database) (err error) {
	defer f.record("CreateDatabase", nameOf(db), &err)
	if err := f.guard(ctx, "CreateDatabase", nameOf(db)); err != nil {
		return err
	}
	v3, err := checkedCopy(db)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	name := v3.GetName()
	if !f.allowed(v3) {
		return trace.AccessDenied("access to db denied")
	}
	if _, ok := f.current()[name]; ok {
		return trace.AlreadyExists("database %q already exists", name)
	}
	f.write(name, v3)
	f.creates++
	return nil
}

// UpdateDatabase replaces name with a validated copy of db; NotFound when it
// is missing from the current state, AccessDenied when it is hidden.
func (f *Fake) UpdateDatabase(ctx context.Context, db types.Database) (err error) {
	defer f.record("UpdateDatabase", nameOf(db), &err)
	if err := f.guard(ctx, "UpdateDatabase", nameOf(db)); err != nil {
		return err
	}
	v3, err := checkedCopy(db)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	name := v3.GetName()
	if !f.allowed(v3) {
		return trace.AccessDenied("access to db denied")
	}
	old, ok := f.current()[name]
	switch {
	case !ok:
		return trace.NotFound("database %q doesn't exist", name)
	case !f.allowed(old):
		return trace.AccessDenied("access to db denied")
	}
	f.write(name, v3)
	f.updates++
	return nil
}

// DeleteDatabase removes name; NotFound when it is missing from the current
// state, AccessDenied when it is hidden.
func (f *Fake) DeleteDatabase(ctx context.Context, name string) (err error) {
	defer f.record("DeleteDatabase", name, &err)
	if err := f.guard(ctx, "DeleteDatabase", name); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	old, ok := f.current()[name]
	switch {
	case !ok:
		return trace.NotFound("database %q doesn't exist", name)
	case !f.allowed(old):
		return trace.AccessDenied("access to db denied")
	}
	f.write(name, nil)
	f.deletes++
	return nil
}

// DatabaseClientCAs runs the same CA choice as APIClient against the Fake's CAs.
func (f *Fake) DatabaseClientCAs(ctx context.Context) (certs [][]byte, err error) {
	defer f.record("DatabaseClientCAs", "", &err)
	if err := f.guard(ctx, "DatabaseClientCAs", ""); err != nil {
		return nil, err
	}
	return teleport.DatabaseClientCAsFrom(ctx, f, f.cfg.ClusterName)
}

// SetRoles sets the Teleport roles ListRoles returns (shared, not copied:
// callers treat them as read-only, like the roles the API returns).
func (f *Fake) SetRoles(roles ...types.Role) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.roles = append([]types.Role(nil), roles...)
}

// ListRoles returns the roles set with SetRoles.
func (f *Fake) ListRoles(ctx context.Context) (roles []types.Role, err error) {
	defer f.record("ListRoles", "", &err)
	if err := f.guard(ctx, "ListRoles", ""); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return append(roles, f.roles...), nil
}

// SetAgents sets the database agents that run, each by its db_service
// resources selector (a label map; "*": "*" matches every db).
func (f *Fake) SetAgents(selectors ...map[string]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.agents = append([]map[string]string(nil), selectors...)
}

// DatabaseServers counts, like Teleport's db_server heartbeats, the agents
// whose selector matches each stored db resource carrying labels that the
// identity may see (heartbeats follow the stored state, not the lagged reads).
func (f *Fake) DatabaseServers(ctx context.Context, labels map[string]string) (served map[string]int, err error) {
	defer f.record("DatabaseServers", "", &err)
	if err := f.guard(ctx, "DatabaseServers", ""); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	served = map[string]int{}
	for name, db := range f.current() {
		if !f.allowed(db) || !matches(db.GetAllLabels(), labels) {
			continue
		}
		for _, sel := range f.agents {
			if matches(db.GetAllLabels(), sel) {
				served[name]++
			}
		}
	}
	return served, nil
}

// matches reports whether labels carry every key of selector with its value
// ("*" for either: any).
func matches(labels, selector map[string]string) bool {
	for k, v := range selector {
		if k == types.Wildcard && v == types.Wildcard {
			continue
		}
		if got, ok := labels[k]; !ok || (v != types.Wildcard && got != v) {
			return false
		}
	}
	return true
}

// GetCertAuthority returns the configured db or db_client CA, with
// Teleport's errors: BadParameter for db_client without
// SupportsDBClientCA (and for unknown types), NotFound for another domain or
// a CA without certificates. It holds certificates only, never keys.
func (f *Fake) GetCertAuthority(ctx context.Context, id types.CertAuthID, _ bool) (ca types.CertAuthority, err error) {
	defer f.record("GetCertAuthority", string(id.Type), &err)
	if err := f.guard(ctx, "GetCertAuthority", string(id.Type)); err != nil {
		return nil, err
	}
	if err := id.Type.Check(); err != nil {
		return nil, trace.Wrap(err)
	}
	if id.Type == types.DatabaseClientCA && !f.cfg.SupportsDBClientCA {
		return nil, trace.BadParameter("%q authority type is not supported", id.Type)
	}
	f.mu.Lock()
	certs := f.cas[id.Type]
	f.mu.Unlock()
	if id.DomainName != f.cfg.ClusterName || len(certs) == 0 {
		return nil, trace.NotFound("cert authority %v not found", id)
	}
	spec := types.CertAuthoritySpecV2{Type: id.Type, ClusterName: id.DomainName}
	for i, c := range certs {
		kp := &types.TLSKeyPair{Cert: slices.Clone(c)}
		if i == 0 {
			spec.ActiveKeys.TLS = append(spec.ActiveKeys.TLS, kp)
		} else {
			spec.AdditionalTrustedKeys.TLS = append(spec.AdditionalTrustedKeys.TLS, kp)
		}
	}
	ca, err = types.NewCertAuthority(spec)
	return ca, trace.Wrap(err)
}

// guard returns the injected error for this call, if any: the context's,
// SetUnavailable's, SetError's or the hook's.
func (f *Fake) guard(ctx context.Context, method, name string) error {
	if err := ctx.Err(); err != nil {
		return trace.Wrap(err)
	}
	f.mu.Lock()
	unavailable, methodErr, hook := f.unavailable, f.methodErrs[method], f.hook
	f.mu.Unlock()
	switch {
	case unavailable != nil:
		return unavailable
	case methodErr != nil:
		return methodErr
	case hook != nil:
		return hook(Call{Method: method, Name: name})
	}
	return nil
}

// record appends a call with its result to the log, then runs the after
// hook; deferred by every call (it runs after the call has unlocked f.mu).
func (f *Fake) record(method, name string, err *error) {
	c := Call{Method: method, Name: name, Err: *err}
	f.mu.Lock()
	f.calls = append(f.calls, c)
	after := f.after
	f.mu.Unlock()
	if after != nil {
		after(c)
	}
}

// checkedCopy copies db and runs CheckAndSetDefaults on the copy, as the
// auth server does, so the caller's object is left alone and invalid
// resources (a name outside ^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$, no
// protocol or URI, ...) fail with BadParameter.
func checkedCopy(db types.Database) (*types.DatabaseV3, error) {
	v3, ok := db.(*types.DatabaseV3)
	if !ok || v3 == nil {
		return nil, trace.BadParameter("unsupported database type %T", db)
	}
	cp := v3.Copy()
	if err := cp.CheckAndSetDefaults(); err != nil {
		if trace.IsBadParameter(err) {
			return nil, trace.Wrap(err)
		}
		return nil, trace.BadParameter("%v", err)
	}
	return cp, nil
}

// current is the authoritative state. Callers hold f.mu.
func (f *Fake) current() map[string]*types.DatabaseV3 { return f.history[len(f.history)-1] }

// view is the state reads see, readLag writes behind. Callers hold f.mu.
func (f *Fake) view() map[string]*types.DatabaseV3 {
	return f.history[max(len(f.history)-1-f.readLag, 0)]
}

// write records a new state with name set to db, or removed when db is nil,
// with a fresh revision as the backend gives. Callers hold f.mu.
func (f *Fake) write(name string, db *types.DatabaseV3) {
	next := maps.Clone(f.current())
	if db == nil {
		delete(next, name)
	} else {
		f.revision++
		db.SetRevision(strconv.Itoa(f.revision))
		next[name] = db
	}
	f.history = append(f.history, next)
}

// allowed reports whether the role's db_labels let the identity see db.
// Callers hold f.mu.
func (f *Fake) allowed(db *types.DatabaseV3) bool {
	if f.cfg.AllowedLabels == nil {
		return true
	}
	return matches(db.GetAllLabels(), f.cfg.AllowedLabels)
}

// nameOf names db for call records, without panicking on a nil one.
func nameOf(db types.Database) string {
	if v3, ok := db.(*types.DatabaseV3); db == nil || (ok && v3 == nil) {
		return ""
	}
	return db.GetName()
}
