package world

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	"github.com/cloudnative-pg/cloudnative-pg/pkg/postgres"
	"github.com/jackc/pgx/v5"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Postgres is a real PostgreSQL server (Debian's) configured as CNPG would
// configure an instance of a Cluster: the server certificate and client CA
// from the Secrets named in spec.certificates (CNPG's defaults otherwise),
// pg_hba.conf and pg_ident.conf rendered by CNPG's own pkg/postgres from
// spec.postgresql.pg_hba / pg_ident. It listens on the Cluster's service
// address (see Main) port 5432, with ssl on.
type Postgres struct {
	Cluster   types.NamespacedName
	Host      string // loopback address of the Cluster's service names
	Port      int
	SocketDir string
	DataDir   string
	OSUser    string // the operating-system user PostgreSQL runs as

	w    *World
	proc *Process
	ns   []string // unshare prefix that runs a command as OSUser
}

// Default CNPG Secret names and keys.
func serverTLSSecret(c *cnpgv1.Cluster) string {
	if c.Spec.Certificates != nil && c.Spec.Certificates.ServerTLSSecret != "" {
		return c.Spec.Certificates.ServerTLSSecret
	}
	return c.Name + "-server"
}

func clientCASecret(c *cnpgv1.Cluster) string {
	if c.Spec.Certificates != nil && c.Spec.Certificates.ClientCASecret != "" {
		return c.Spec.Certificates.ClientCASecret
	}
	return c.Name + "-ca"
}

// StartPostgres starts PostgreSQL for the Cluster (read from the apiserver).
// It must run inside the world's namespace (Main).
func (w *World) StartPostgres(ctx context.Context, namespace, name string) (*Postgres, error) {
	if !Inside() {
		return nil, fmt.Errorf("world: StartPostgres needs the world's namespace (call world.Main from TestMain)")
	}
	host, err := ServiceIP(namespace, name)
	if err != nil {
		return nil, err
	}
	bin, err := PostgresBinDir()
	if err != nil {
		return nil, err
	}
	uid, gid, osUser, err := postgresIDs()
	if err != nil {
		return nil, err
	}
	sock, err := os.MkdirTemp("", "pgs")
	if err != nil {
		return nil, err
	}
	p := &Postgres{
		Cluster: types.NamespacedName{Namespace: namespace, Name: name}, Host: host, Port: 5432,
		SocketDir: sock, DataDir: filepath.Join(w.Dir, "pg-"+namespace+"-"+name), OSUser: osUser, w: w,
		// PostgreSQL refuses uid 0 and initdb needs getpwuid(): run it in a
		// nested user namespace as an existing non-root account.
		ns: []string{"unshare", "-U", "--map-user=" + strconv.Itoa(uid), "--map-group=" + strconv.Itoa(gid)},
	}
	if out, err := p.run(filepath.Join(bin, "initdb"), "-D", p.DataDir, "-U", "postgres", "--auth-local=trust", "--auth-host=reject", "--no-sync"); err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	if err := p.Configure(ctx); err != nil {
		return nil, err
	}
	p.proc, err = StartProcess(w.Dir, "postgres-"+namespace+"-"+name, nil, append(p.ns, filepath.Join(bin, "postgres"), "-D", p.DataDir)...)
	if err != nil {
		return nil, err
	}
	w.Adopt(p.proc)
	err = waitFor(30*time.Second, 50*time.Millisecond, func() error {
		if done, err := p.proc.Exited(); done {
			return fmt.Errorf("postgres exited: %w", err)
		}
		c, err := p.Superuser(ctx)
		if err != nil {
			return err
		}
		return c.Close(ctx)
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: %w\n%s", err, p.proc.Tail(4<<10))
	}
	return p, nil
}

func postgresIDs() (uid, gid int, name string, err error) {
	uid, _ = strconv.Atoi(os.Getenv("HOST_UID"))
	if uid == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return 0, 0, "", fmt.Errorf("running as root needs a 'postgres' account: %w", err)
		}
		uid, _ = strconv.Atoi(u.Uid)
	}
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return 0, 0, "", err
	}
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid, u.Username, nil
}

func (p *Postgres) run(argv ...string) ([]byte, error) {
	argv = append(append([]string(nil), p.ns...), argv...)
	return exec.Command(argv[0], argv[1:]...).CombinedOutput()
}

// Configure (re)writes the server certificate, client CA, pg_hba.conf and
// pg_ident.conf from the Cluster and its Secrets as they are now in the
// apiserver, and reloads a running server.
func (p *Postgres) Configure(ctx context.Context) error {
	var c cnpgv1.Cluster
	if err := p.w.Client.Get(ctx, p.Cluster, &c); err != nil {
		return err
	}
	var server, ca corev1.Secret
	if err := p.w.Client.Get(ctx, types.NamespacedName{Namespace: c.Namespace, Name: serverTLSSecret(&c)}, &server); err != nil {
		return fmt.Errorf("server TLS secret: %w", err)
	}
	if err := p.w.Client.Get(ctx, types.NamespacedName{Namespace: c.Namespace, Name: clientCASecret(&c)}, &ca); err != nil {
		return fmt.Errorf("client CA secret: %w", err)
	}
	hba, err := postgres.CreateHBARules(c.Spec.PostgresConfiguration.PgHBA, postgres.HBAOptions{DefaultAuthenticationMethod: "scram-sha-256"})
	if err != nil {
		return err
	}
	ident, err := postgres.CreateIdentRules(c.Spec.PostgresConfiguration.PgIdent, p.OSUser)
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"server.crt":    server.Data[corev1.TLSCertKey],
		"server.key":    server.Data[corev1.TLSPrivateKeyKey],
		"client-ca.crt": ca.Data["ca.crt"],
		"pg_hba.conf":   []byte(hba),
		"pg_ident.conf": []byte(ident),
		"postgresql.auto.conf": fmt.Appendf(nil, "listen_addresses = '%s'\nport = %d\nunix_socket_directories = '%s'\n"+
			"ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nssl_ca_file = 'client-ca.crt'\n"+
			"log_connections = on\nfsync = off\n", p.Host, p.Port, p.SocketDir),
	}
	for name, data := range files {
		if len(data) == 0 {
			return fmt.Errorf("postgres: %s would be empty (check the Cluster's Secrets)", name)
		}
		if err := os.WriteFile(filepath.Join(p.DataDir, name), data, 0o600); err != nil {
			return err
		}
	}
	if p.proc != nil {
		return syscall.Kill(p.proc.PID(), syscall.SIGHUP)
	}
	return nil
}

// Superuser connects as the postgres superuser over the Unix socket (peer
// authentication through CNPG's 'local' ident map).
func (p *Postgres) Superuser(ctx context.Context) (*pgx.Conn, error) {
	return pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres", p.SocketDir, p.Port))
}

// Exec runs SQL as the superuser.
func (p *Postgres) Exec(ctx context.Context, sql string) error {
	c, err := p.Superuser(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = c.Close(ctx) }()
	_, err = c.Exec(ctx, sql)
	return err
}

// Stop stops the server.
func (p *Postgres) Stop() { p.proc.Stop() }
