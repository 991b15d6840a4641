// Package teleport is the controller's view of the Teleport API: a small
// interface, its implementation over github.com/gravitational/teleport/api,
// and a fake with Teleport's semantics for table tests.
package teleport

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/gravitational/teleport/api/client"
	"github.com/gravitational/teleport/api/types"
	"github.com/gravitational/trace"
	"google.golang.org/grpc/grpclog"
)

// Client is what the controller needs from Teleport.
type Client interface {
	Ping(ctx context.Context) (ClusterInfo, error)
	GetDatabase(ctx context.Context, name string) (types.Database, error)
	ListDatabases(ctx context.Context) ([]types.Database, error)
	CreateDatabase(ctx context.Context, db types.Database) error
	UpdateDatabase(ctx context.Context, db types.Database) error
	DeleteDatabase(ctx context.Context, name string) error
	// DatabaseClientCAs returns the PEM certificates (never keys) of every
	// trusted TLS key pair, active and additional, of the CA that signs the
	// database agent's client certificates: db_client on Teleport >= 15, db before.
	DatabaseClientCAs(ctx context.Context) ([][]byte, error)
}

// ClusterInfo is what Ping tells about the Teleport cluster.
type ClusterInfo struct {
	Name          string
	ServerVersion string
}

// Config selects the Teleport address and the controller's identity.
type Config struct {
	// Addrs are Teleport auth or proxy addresses (host:port).
	Addrs []string
	// IdentityFile is an identity file (tctl auth sign --format=file).
	IdentityFile string
	// BotDir is a tbot directory destination; its "identity" file is used.
	BotDir string
	// ReloadInterval is how often the identity file is checked for a
	// renewal (tbot renews certificates that live about an hour). Default 1 min.
	ReloadInterval time.Duration
	// DialTimeout bounds the first connection. Default 30 s.
	DialTimeout time.Duration
}

// identityPath validates the config and returns the identity file to load.
func (c Config) identityPath() (string, error) {
	if len(c.Addrs) == 0 {
		return "", trace.BadParameter("teleport: no address")
	}
	switch {
	case c.IdentityFile != "" && c.BotDir != "":
		return "", trace.BadParameter("teleport: set an identity file or a tbot directory, not both")
	case c.IdentityFile != "":
		return c.IdentityFile, nil
	case c.BotDir != "":
		return c.BotDir + "/identity", nil
	default:
		return "", trace.BadParameter("teleport: an identity file or a tbot directory is required")
	}
}

// APIClient implements Client over the Teleport gRPC API.
type APIClient struct {
	api   *client.Client
	creds *client.DynamicIdentityFileCreds
	stop  context.CancelFunc
	done  chan struct{}

	mu          sync.Mutex
	clusterName string
}

var (
	_ Client = (*APIClient)(nil)
	_ Client = (*Fake)(nil)
)

var quietGRPC sync.Once

// New connects to Teleport with the identity file, and keeps reloading the
// file when it changes so renewed certificates are used without a restart.
// TLS to Teleport is always verified: there is no option to weaken it.
func New(ctx context.Context, cfg Config) (*APIClient, error) {
	path, err := cfg.identityPath()
	if err != nil {
		return nil, err
	}
	if cfg.ReloadInterval <= 0 {
		cfg.ReloadInterval = time.Minute
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 30 * time.Second
	}
	// client.New dials several ways at once (auth, tunnel, proxy) and cancels
	// the losers; grpc's default logger prints each as a warning on stderr.
	// Keep grpc's errors, drop its info and warnings.
	quietGRPC.Do(func() { grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, io.Discard, os.Stderr)) })
	creds, err := client.NewDynamicIdentityFileCreds(path)
	if err != nil {
		return nil, trace.Wrap(err, "teleport: loading identity %s", path)
	}
	api, err := client.New(ctx, client.Config{Addrs: cfg.Addrs, Credentials: []client.Credentials{creds}, DialTimeout: cfg.DialTimeout})
	if err != nil {
		return nil, trace.Wrap(err, "teleport: connecting to %v", cfg.Addrs)
	}
	wctx, stop := context.WithCancel(context.Background())
	c := &APIClient{api: api, creds: creds, stop: stop, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		watchFile(wctx, path, cfg.ReloadInterval, creds.Reload)
	}()
	return c, nil
}

// Close stops the reload watcher and closes the connection.
func (c *APIClient) Close() error {
	c.stop()
	<-c.done
	return c.api.Close()
}

// Reload reloads the identity file now.
func (c *APIClient) Reload() error { return c.creds.Reload() }

// watchFile calls reload whenever the file's content changes, checking every interval.
func watchFile(ctx context.Context, path string, interval time.Duration, reload func() error) {
	last := fileDigest(path)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d := fileDigest(path)
		if d == "" || d == last {
			continue
		}
		// A half-written file fails to parse: keep the old digest and retry.
		if err := reload(); err == nil {
			last = d
		}
	}
}

func fileDigest(path string) string {
	b, err := os.ReadFile(path) //nolint:gosec // the configured identity file
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

// Ping returns the cluster name and server version.
func (c *APIClient) Ping(ctx context.Context) (ClusterInfo, error) {
	resp, err := c.api.Ping(ctx)
	if err != nil {
		return ClusterInfo{}, trace.Wrap(err)
	}
	c.mu.Lock()
	c.clusterName = resp.ClusterName
	c.mu.Unlock()
	return ClusterInfo{Name: resp.ClusterName, ServerVersion: resp.ServerVersion}, nil
}

// GetDatabase reads one db resource.
func (c *APIClient) GetDatabase(ctx context.Context, name string) (types.Database, error) {
	db, err := c.api.GetDatabase(ctx, name)
	return db, trace.Wrap(err)
}

// ListDatabases lists the db resources the identity may see.
func (c *APIClient) ListDatabases(ctx context.Context) ([]types.Database, error) {
	dbs, err := c.api.GetDatabases(ctx)
	return dbs, trace.Wrap(err)
}

// CreateDatabase creates a db resource (AlreadyExists if the name is taken).
func (c *APIClient) CreateDatabase(ctx context.Context, db types.Database) error {
	return trace.Wrap(c.api.CreateDatabase(ctx, db))
}

// UpdateDatabase replaces a db resource (NotFound if missing).
func (c *APIClient) UpdateDatabase(ctx context.Context, db types.Database) error {
	return trace.Wrap(c.api.UpdateDatabase(ctx, db))
}

// DeleteDatabase deletes a db resource (NotFound if missing).
func (c *APIClient) DeleteDatabase(ctx context.Context, name string) error {
	return trace.Wrap(c.api.DeleteDatabase(ctx, name))
}

// DatabaseClientCAs returns the database-client CA certificates.
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
	return databaseClientCAs(ctx, c.api, name)
}

// caGetter is the part of the API that reads a certificate authority.
type caGetter interface {
	GetCertAuthority(ctx context.Context, id types.CertAuthID, loadKeys bool) (types.CertAuthority, error)
}

// databaseClientCAs asks for db_client (Teleport >= 15) and falls back to db
// when the server does not know it: NotFound, or BadParameter
// `"db_client" authority type is not supported` from Teleport <= 14. Errors
// are classified by kind, never by text. It returns every trusted key
// pair's certificate (active and additional, so a rotation in progress
// locks nobody out), deduplicated, never a key.
func databaseClientCAs(ctx context.Context, g caGetter, clusterName string) ([][]byte, error) {
	ca, err := g.GetCertAuthority(ctx, types.CertAuthID{Type: types.DatabaseClientCA, DomainName: clusterName}, false)
	if trace.IsNotFound(err) || trace.IsBadParameter(err) {
		ca, err = g.GetCertAuthority(ctx, types.CertAuthID{Type: types.DatabaseCA, DomainName: clusterName}, false)
	}
	if err != nil {
		return nil, trace.Wrap(err, "teleport: reading the database client CA")
	}
	var out [][]byte
	seen := map[string]bool{}
	for _, kp := range ca.GetTrustedTLSKeyPairs() {
		if len(kp.Cert) == 0 || seen[string(kp.Cert)] {
			continue
		}
		seen[string(kp.Cert)] = true
		out = append(out, append([]byte(nil), kp.Cert...))
	}
	if len(out) == 0 {
		return nil, trace.NotFound("teleport: CA %s has no trusted TLS certificate", ca.GetName())
	}
	return out, nil
}

