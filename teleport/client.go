// Package teleport is the controller's view of the Teleport API: a small
// interface, and its implementation over github.com/gravitational/teleport/api.
// The fake with Teleport's semantics, for tests, is teleport/teleporttest
// (never compiled into the binary).
package teleport

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/gravitational/teleport/api/breaker"
	"github.com/gravitational/teleport/api/client"
	"github.com/gravitational/teleport/api/client/proto"
	"github.com/gravitational/teleport/api/types"
	"github.com/gravitational/trace"
	"github.com/gravitational/trace/trail"
	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/grpclog"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Client is the Teleport API of this module (the controller depends only on
// the calls it makes, controllers.Teleport; tests and tools also Ping), so
// code can be tested against teleporttest.Fake and the API version can change behind it.
// Errors keep their trace kind: classify them with trace.IsNotFound,
// trace.IsAlreadyExists, trace.IsAccessDenied, trace.IsBadParameter, never by text.
type Client interface {
	// Ping checks the connection and names the cluster.
	Ping(ctx context.Context) (ClusterInfo, error)
	// GetDatabase reads one db resource; NotFound when missing.
	GetDatabase(ctx context.Context, name string) (types.Database, error)
	// ListDatabases lists the db resources the identity may see, by name
	// and labels (not their spec: see DatabaseMeta).
	ListDatabases(ctx context.Context) ([]DatabaseMeta, error)
	// CreateDatabase creates a db resource; AlreadyExists when the name is taken,
	// even by a resource the identity may not see.
	CreateDatabase(ctx context.Context, db types.Database) error
	// UpdateDatabase replaces a db resource; NotFound when missing.
	UpdateDatabase(ctx context.Context, db types.Database) error
	// DeleteDatabase deletes a db resource; NotFound when missing.
	DeleteDatabase(ctx context.Context, name string) error
	// DatabaseClientCAs returns the PEM certificates (never keys) of every
	// trusted TLS key pair (active and additional) of the CA that signs the
	// database agent's client certificates: db_client on Teleport >= 15; on
	// NotFound or BadParameter (Teleport <= 14 says BadParameter
	// `"db_client" authority type is not supported`) it falls back to db.
	// PostgreSQL must trust all of them so a CA rotation locks nobody out.
	DatabaseClientCAs(ctx context.Context) ([][]byte, error)
	// ListRoles lists the Teleport roles, to check which ones let a user log
	// in to the controller's databases as a CNPG system user.
	ListRoles(ctx context.Context) ([]types.Role, error)
	// DatabaseServers counts, by db name, the database agents serving the db
	// resources that carry labels (their db_server heartbeats), among those
	// the identity may see. A db no agent serves is absent.
	DatabaseServers(ctx context.Context, labels map[string]string) (map[string]int, error)
}

// ClusterInfo is what Ping tells about the Teleport cluster.
type ClusterInfo struct {
	// Name is the Teleport cluster name, the domain of its certificate authorities.
	Name string
	// ServerVersion is the auth server's version, e.g. "13.3.8".
	ServerVersion string
}

var _ Client = (*APIClient)(nil)

// Config selects the Teleport address and the controller's identity.
// There is deliberately no option to weaken TLS: the identity carries the
// cluster's CA and the connection is always verified against it.
type Config struct {
	// Addrs are Teleport auth or proxy addresses (host:port).
	Addrs []string
	// IdentityFile is an identity file (tctl auth sign --format=file, or a
	// tbot identity output). Exactly one of IdentityFile and BotDir is set.
	IdentityFile string
	// BotDir is a tbot directory destination (it holds identity, tlscert, key,
	// tlscacerts); its "identity" file is used.
	BotDir string
	// ReloadInterval is how often the identity file is checked for a renewal:
	// tbot renews certificates that live about an hour. Default 1 min.
	ReloadInterval time.Duration
	// DialTimeout bounds each connection attempt. Default: the API's (30 s).
	DialTimeout time.Duration
	// Log receives identity reload events and failures (the watcher has no
	// caller to return them to). The zero Logger discards.
	Log logr.Logger
	// OnIdentity, when set, is told when the loaded identity's certificate
	// expires: at the start and after each reload (a metric to alert on).
	OnIdentity func(notAfter time.Time)
}

// DefaultReloadInterval is the identity file check period when none is set.
const DefaultReloadInterval = time.Minute

// Validate reports a configuration that cannot work, before any dialing,
// so a bad flag fails at start with a clear message.
func (c Config) Validate() error {
	_, err := c.identityPath()
	return err
}

// identityPath validates the config and returns the identity file to load.
func (c Config) identityPath() (string, error) {
	if len(c.Addrs) == 0 {
		return "", trace.BadParameter("teleport: no Teleport address configured")
	}
	for _, a := range c.Addrs {
		if a == "" {
			return "", trace.BadParameter("teleport: empty Teleport address in %q", c.Addrs)
		}
	}
	if c.ReloadInterval < 0 {
		return "", trace.BadParameter("teleport: negative identity reload interval %v", c.ReloadInterval)
	}
	if c.DialTimeout < 0 {
		return "", trace.BadParameter("teleport: negative dial timeout %v", c.DialTimeout)
	}
	switch {
	case c.IdentityFile != "" && c.BotDir != "":
		return "", trace.BadParameter("teleport: set either an identity file or a tbot directory, not both")
	case c.IdentityFile != "":
		return c.IdentityFile, nil
	case c.BotDir != "":
		return filepath.Join(c.BotDir, "identity"), nil
	default:
		return "", trace.BadParameter("teleport: an identity file or a tbot directory is required")
	}
}

// MaxListBytes bounds one answer of Teleport: a list of every db resource
// the identity may see (Teleport 13 lists them unpaginated) is about 1.5 KB
// each, so gRPC's default 4 MiB failed at about 2,700 (make bench saw it);
// 64 MiB holds about 40,000.
const MaxListBytes = 64 << 20

// APIClient implements Client over the Teleport gRPC API.
type APIClient struct {
	api   *client.Client
	creds *client.DynamicIdentityFileCreds
	stop  context.CancelFunc
	done  chan struct{}

	mu          sync.Mutex
	clusterName string

	path       string
	notAfter   atomic.Int64 // the loaded identity's expiry, Unix ns (0: unknown)
	onIdentity func(time.Time)
	log        logr.Logger
}

// New connects to Teleport with the configured identity and keeps reloading
// the identity file when it changes, so certificates renewed by tbot are used
// without a restart. ctx bounds the dial and the reload watcher's life;
// Close stops the watcher too.
func New(ctx context.Context, cfg Config) (*APIClient, error) {
	path, err := cfg.identityPath()
	if err != nil {
		return nil, err
	}
	if cfg.ReloadInterval == 0 {
		cfg.ReloadInterval = DefaultReloadInterval
	}
	quietGRPCLog()

	// Fingerprint before loading: a renewal landing between the two is then
	// seen as a change instead of being missed until the next one.
	fp, err := fingerprintFile(path)
	if err != nil {
		return nil, trace.Wrap(err, "teleport: reading identity %s", path)
	}
	creds, err := client.NewDynamicIdentityFileCreds(path)
	if err != nil {
		return nil, trace.Wrap(err, "teleport: loading identity %s", path)
	}
	api, err := client.New(ctx, client.Config{
		Addrs:       cfg.Addrs,
		Credentials: []client.Credentials{creds},
		DialTimeout: cfg.DialTimeout,
		DialOpts:    []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxListBytes))},
		// Teleport's client breaker, tripped by an outage or an expired
		// identity, refuses every call for 60 s by default after Teleport is
		// back: 5 s here, the controller's own retries pace the rest.
		CircuitBreakerConfig: breakerConfig(),
	})
	if err != nil {
		return nil, trace.Wrap(err, "teleport: connecting to %v", cfg.Addrs)
	}
	wctx, stop := context.WithCancel(ctx)
	c := &APIClient{api: api, creds: creds, stop: stop, done: make(chan struct{}), path: path, onIdentity: cfg.OnIdentity, log: cfg.Log}
	c.loaded()
	w := watcher{path: path, interval: cfg.ReloadInterval, reload: c.Reload, log: cfg.Log}
	go func() {
		defer close(c.done)
		w.run(wctx, fp)
	}()
	return c, nil
}

// breakerTripped is how long Teleport's client breaker refuses calls once tripped.
const breakerTripped = 5 * time.Second

func breakerConfig() breaker.Config {
	c := breaker.DefaultBreakerConfig(clockwork.NewRealClock())
	c.TrippedPeriod = breakerTripped
	return c
}

// Close stops the identity reload watcher and closes the connection.
func (c *APIClient) Close() error {
	c.stop()
	<-c.done
	return trace.Wrap(c.api.Close())
}

// Reload re-reads the identity file now; new connections use it. The watcher
// does this on its own; tests and callers that know a renewal happened can force it.
func (c *APIClient) Reload() error {
	if err := c.creds.Reload(); err != nil {
		return trace.Wrap(err, "teleport: reloading identity %s", c.creds.Path)
	}
	c.loaded()
	return nil
}

// loaded records the expiry of the identity file as it is now.
func (c *APIClient) loaded() {
	t, err := IdentityFileExpiry(c.path)
	if err != nil {
		c.log.Error(err, "Cannot read the Teleport identity's expiry", "path", c.path)
		return
	}
	c.notAfter.Store(t.UnixNano())
	if c.onIdentity != nil {
		c.onIdentity(t)
	}
}

// IdentityExpiry is when the loaded identity's certificate expires (zero
// when it could not be read).
func (c *APIClient) IdentityExpiry() time.Time {
	if n := c.notAfter.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// wrap is trace.Wrap, saying first that the identity has expired when it
// has: Teleport's answer then names no cause.
func (c *APIClient) wrap(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	err = trace.Wrap(err, fmt.Sprintf(format, args...))
	if exp := c.IdentityExpiry(); !exp.IsZero() && time.Now().After(exp) {
		return trace.Wrap(err, "%s", expiredMessage(c.path, exp))
	}
	return err
}

var quietGRPCOnce sync.Once

// quietGRPCLog keeps gRPC's errors on stderr and drops its info and warnings.
// client.New dials several ways at once (auth, reverse tunnel, proxy) and
// cancels the losers; gRPC logs each as a warning
// (`addrConn.createTransport failed ... context canceled`), and
// k8s.io/apiserver's etcd3 package, linked in through our Kubernetes
// dependencies, installs a klog-backed gRPC logger in init() that prints them,
// so users would read every start as an error. Setting
// GRPC_GO_LOG_SEVERITY_LEVEL or GRPC_GO_LOG_VERBOSITY_LEVEL opts out, for
// debugging. Done once: grpclog.SetLoggerV2 is not safe to call concurrently.
func quietGRPCLog() {
	quietGRPCOnce.Do(func() {
		if os.Getenv("GRPC_GO_LOG_SEVERITY_LEVEL") != "" || os.Getenv("GRPC_GO_LOG_VERBOSITY_LEVEL") != "" {
			return
		}
		grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, io.Discard, os.Stderr))
	})
}

// Ping returns the cluster name and server version, and remembers the name
// for DatabaseClientCAs.
func (c *APIClient) Ping(ctx context.Context) (ClusterInfo, error) {
	resp, err := c.api.Ping(ctx)
	if err != nil {
		return ClusterInfo{}, c.wrap(err, "teleport: ping")
	}
	c.mu.Lock()
	c.clusterName = resp.ClusterName
	c.mu.Unlock()
	return ClusterInfo{Name: resp.ClusterName, ServerVersion: resp.ServerVersion}, nil
}

// GetDatabase reads one db resource (NotFound if missing).
func (c *APIClient) GetDatabase(ctx context.Context, name string) (types.Database, error) {
	db, err := c.api.GetDatabase(ctx, name)
	if err != nil {
		return nil, c.wrap(err, "teleport: get db %q", name)
	}
	return db, nil
}

// CreateDatabase creates a db resource (AlreadyExists if the name is taken).
func (c *APIClient) CreateDatabase(ctx context.Context, db types.Database) error {
	return c.wrap(c.api.CreateDatabase(ctx, db), "teleport: create db %q", nameOf(db))
}

// UpdateDatabase replaces a db resource (NotFound if missing).
func (c *APIClient) UpdateDatabase(ctx context.Context, db types.Database) error {
	return c.wrap(c.api.UpdateDatabase(ctx, db), "teleport: update db %q", nameOf(db))
}

// DeleteDatabase deletes a db resource (NotFound if missing).
func (c *APIClient) DeleteDatabase(ctx context.Context, name string) error {
	return c.wrap(c.api.DeleteDatabase(ctx, name), "teleport: delete db %q", name)
}

// DatabaseClientCAs returns the certificates of the CA that signs the
// database agent's client certificates (see Client). It pings first when the
// cluster name is not known yet.
func (c *APIClient) DatabaseClientCAs(ctx context.Context) ([][]byte, error) {
	c.mu.Lock()
	name := c.clusterName
	c.mu.Unlock()
	if name == "" {
		info, err := c.Ping(ctx)
		if err != nil {
			return nil, err
		}
		name = info.Name
	}
	cas, err := DatabaseClientCAsFrom(ctx, c.api, name)
	return cas, c.wrap(err, "teleport: database client CAs")
}

// ListRoles lists the Teleport roles (needs role list/read): the paginated
// ListRoles of newer auth servers, else the GetRoles call they replaced
// (Teleport 13 has only that; this teleport/api no longer wraps it).
func (c *APIClient) ListRoles(ctx context.Context) ([]types.Role, error) {
	roles, err := c.api.GetRoles(ctx)
	if err == nil || !unimplemented(err) {
		return roles, c.wrap(err, "teleport: list roles")
	}
	var rsp proto.GetRolesResponse
	if err := c.api.GetConnection().Invoke(ctx, "/proto.AuthService/GetRoles", &emptypb.Empty{}, &rsp); err != nil {
		return nil, c.wrap(trail.FromGRPC(err), "teleport: list roles")
	}
	roles = make([]types.Role, 0, len(rsp.Roles))
	for _, r := range rsp.Roles {
		roles = append(roles, r)
	}
	return roles, nil
}

// unimplemented reports a call the auth server does not have.
func unimplemented(err error) bool {
	if trace.IsNotImplemented(err) {
		return true
	}
	st, ok := status.FromError(trace.Unwrap(err))
	return ok && st.Code() == codes.Unimplemented
}

// nameOf names db for error messages, without panicking on a nil one.
func nameOf(db types.Database) string {
	if v3, ok := db.(*types.DatabaseV3); db == nil || (ok && v3 == nil) {
		return ""
	}
	return db.GetName()
}
