package world

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Teleport is a real Teleport v13.3.8 (auth + proxy + database agent in one
// process) inside the world's namespace, with tctl and tsh beside it.
type Teleport struct {
	Dir         string
	Config      string
	BinDir      string
	ClusterName string
	AuthAddr    string // the auth service's gRPC address: what the controller dials
	PodAuthAddr string // the same service as a Pod of the world dials it (the world's address)
	ProxyAddr   string // the proxy's web address: what tsh logs in to

	proc *Process
}

const teleportConfig = `version: v3
teleport:
  nodename: world
  data_dir: %[1]s/data
  diag_addr: 127.0.0.1:3000
  storage:
    type: sqlite
    # nanoseconds: reads follow writes in ~0.1 s instead of ~1 s
    poll_stream_period: 100000000
    # Write-ahead log, fsync at checkpoints: with sqlite's default (a rollback
    # journal, fsync on every write) this machine's disk made each write wait
    # for fsyncs, and the database agent's db_server heartbeats (one per db it
    # serves) queued with the controller's writes: over 14,000 "SLOW
    # TRANSACTION" (> 1 s) warnings while 1,000 Clusters registered (make bench).
    journal: WAL
    sync: NORMAL
  log:
    output: stderr
    severity: INFO
auth_service:
  enabled: true
  # every address of the world's namespace: loopback, and WorldAddr for Pods
  # (the controller's Deployment installed by the chart)
  listen_addr: 0.0.0.0:3025
  cluster_name: world
  proxy_listener_mode: separate
  authentication:
    type: local
    second_factor: "off"
proxy_service:
  enabled: true
  listen_addr: 127.0.0.1:3023
  web_listen_addr: 127.0.0.1:3080
  tunnel_listen_addr: 127.0.0.1:3024
  public_addr: localhost:3080
  postgres_listen_addr: 127.0.0.1:3036
  postgres_public_addr: 127.0.0.1:3036
ssh_service:
  enabled: false
`

// StartTeleport starts Teleport with its data in dir and waits for /readyz.
// The database agent serves every db resource labelled as the controller's.
func StartTeleport(dir string) (*Teleport, error) {
	return StartTeleportWith(dir, TeleportOptions{})
}

// TeleportOptions tune the world's Teleport.
type TeleportOptions struct {
	// NoAgent runs auth and proxy only: the database agents are then the
	// test's (StartAgent).
	NoAgent bool
}

// StartTeleportWith is StartTeleport with options.
func StartTeleportWith(dir string, o TeleportOptions) (*Teleport, error) {
	if !Inside() {
		return nil, fmt.Errorf("world: Teleport needs the world's namespace (call world.Main from TestMain)")
	}
	bin, err := ToolDir("teleport")
	if err != nil {
		return nil, err
	}
	tp := &Teleport{
		Dir: dir, Config: filepath.Join(dir, "teleport.yaml"), BinDir: bin, ClusterName: "world",
		AuthAddr: "127.0.0.1:3025", PodAuthAddr: WorldAddr + ":3025", ProxyAddr: "localhost:3080",
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	// The database agent runs with the section the project ships.
	dbService, err := os.ReadFile(filepath.Join(RepoRoot(), "config", "teleport", "db-service.yaml"))
	if err != nil {
		return nil, err
	}
	if o.NoAgent {
		dbService = []byte("db_service:\n  enabled: false\n")
	}
	if err := os.WriteFile(tp.Config, append(fmt.Appendf(nil, teleportConfig, dir), dbService...), 0o600); err != nil {
		return nil, err
	}
	return tp, tp.Start()
}

// Start (re)starts the Teleport process on the same data directory.
func (tp *Teleport) Start() error {
	if tp.proc != nil {
		if done, _ := tp.proc.Exited(); !done {
			return fmt.Errorf("teleport is running")
		}
	}
	p, err := StartProcess(tp.Dir, "teleport", nil, filepath.Join(tp.BinDir, "teleport"), "start", "-c", tp.Config)
	if err != nil {
		return err
	}
	tp.proc = p
	err = waitFor(60*time.Second, 50*time.Millisecond, func() error {
		if done, err := p.Exited(); done {
			return fmt.Errorf("teleport exited: %w", err)
		}
		resp, err := http.Get("http://127.0.0.1:3000/readyz") //nolint:noctx // short poll on loopback
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("teleport: %w\n%s", err, p.Tail(8<<10))
	}
	return nil
}

// Stop stops the Teleport process (an outage); Start brings it back.
func (tp *Teleport) Stop() {
	if tp.proc != nil {
		tp.proc.Stop()
	}
}

// Logs returns the tail of Teleport's log.
func (tp *Teleport) Logs() string {
	if tp.proc == nil {
		return ""
	}
	return tp.proc.Tail(16 << 10)
}

// Tctl runs the admin tctl (local auth server config).
func (tp *Teleport) Tctl(ctx context.Context, stdin string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(tp.BinDir, "tctl"), append([]string{"-c", tp.Config}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("tctl %s: %w\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.Bytes(), nil
}

// Create runs `tctl create -f` on YAML resources.
func (tp *Teleport) Create(ctx context.Context, yaml string) error {
	p := filepath.Join(tp.Dir, fmt.Sprintf("create-%d.yaml", time.Now().UnixNano()))
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		return err
	}
	_, err := tp.Tctl(ctx, "", "create", "-f", p)
	return err
}

// ControllerRoleFile is the controller's least-privilege role shipped with the project.
func ControllerRoleFile() string {
	return filepath.Join(RepoRoot(), "config", "teleport", "controller-role.yaml")
}

// ControllerIdentity creates (once) the controller's role from
// config/teleport/controller-role.yaml and a user holding only it, and signs
// an identity file for it, as tbot or an admin would.
func (tp *Teleport) ControllerIdentity(ctx context.Context, user string, ttl time.Duration, kubeClusters ...string) (string, error) {
	role, err := os.ReadFile(ControllerRoleFile())
	if err != nil {
		return "", err
	}
	if err := tp.Create(ctx, string(role)); err != nil {
		return "", err
	}
	if err := tp.ControllerUser(ctx, user, kubeClusters...); err != nil {
		return "", err
	}
	return tp.SignIdentity(ctx, user, ttl)
}

// ControllerUser creates a user with the controller's role and the trait
// kube_cluster (the --kube-cluster names whose db resources it may touch).
func (tp *Teleport) ControllerUser(ctx context.Context, user string, kubeClusters ...string) error {
	return tp.Create(ctx, fmt.Sprintf("kind: user\nversion: v2\nmetadata:\n  name: %s\nspec:\n  roles: [cnpg-teleport-controller]\n  traits:\n    kube_cluster: [%s]\n",
		user, strings.Join(kubeClusters, ", ")))
}

// SignIdentity signs an identity file (`tctl auth sign --format=file`) for user.
func (tp *Teleport) SignIdentity(ctx context.Context, user string, ttl time.Duration) (string, error) {
	out := filepath.Join(tp.Dir, user+".identity")
	_, err := tp.Tctl(ctx, "", "auth", "sign", "--user="+user, "--format=file", "--overwrite", "--out="+out, "--ttl="+ttl.String())
	return out, err
}

// TshUser is a Teleport user logged in with tsh (its own TELEPORT_HOME).
type TshUser struct {
	Name string
	Home string
	tp   *Teleport
}

// User creates a local user with a role allowing the given database users
// and names on the controller's db resources, sets a password through the
// web API with a reset token, and logs in with `tsh login` as a person would.
func (tp *Teleport) User(ctx context.Context, name string, dbUsers, dbNames []string) (*TshUser, error) {
	return tp.UserFor(ctx, name, map[string]string{"cnpg-teleport.io/managed-by": "cnpg-teleport"}, dbUsers, dbNames)
}

// UserFor is User with a role that allows only db resources carrying dbLabels.
func (tp *Teleport) UserFor(ctx context.Context, name string, dbLabels map[string]string, dbUsers, dbNames []string) (*TshUser, error) {
	var labels strings.Builder
	for _, k := range slices.Sorted(maps.Keys(dbLabels)) {
		fmt.Fprintf(&labels, "      %q: %q\n", k, dbLabels[k])
	}
	role := fmt.Sprintf(`kind: role
version: v6
metadata:
  name: %[1]s-db
spec:
  allow:
    db_labels:
%[4]s    db_users: %[2]s
    db_names: %[3]s
---
kind: user
version: v2
metadata:
  name: %[1]s
spec:
  roles: [%[1]s-db]
`, name, jsonList(dbUsers), jsonList(dbNames), labels.String())
	if err := tp.Create(ctx, role); err != nil {
		return nil, err
	}
	return tp.login(ctx, name)
}

// UserWithRoles creates a local user holding the given (existing) roles and
// logs it in with tsh.
func (tp *Teleport) UserWithRoles(ctx context.Context, name string, roles ...string) (*TshUser, error) {
	if err := tp.Create(ctx, fmt.Sprintf("kind: user\nversion: v2\nmetadata:\n  name: %s\nspec:\n  roles: [%s]\n", name, strings.Join(roles, ", "))); err != nil {
		return nil, err
	}
	return tp.login(ctx, name)
}

// login sets the user's password through the web API with a reset token and
// logs in with `tsh login`, as a person would.
func (tp *Teleport) login(ctx context.Context, name string) (*TshUser, error) {
	out, err := tp.Tctl(ctx, "", "users", "reset", name)
	if err != nil {
		return nil, err
	}
	token := regexp.MustCompile(`reset/([0-9a-f]+)`).FindSubmatch(out)
	if token == nil {
		return nil, fmt.Errorf("no reset token in: %s", out)
	}
	password := "W0rld-" + randomHex(12)
	if err := setPassword(ctx, string(token[1]), password); err != nil {
		return nil, err
	}
	u := &TshUser{Name: name, Home: filepath.Join(tp.Dir, "tsh-"+name), tp: tp}
	// tsh reads a password only from a terminal: script(1) gives it one.
	login := fmt.Sprintf("%s login --insecure --proxy=%s --user=%s", filepath.Join(tp.BinDir, "tsh"), tp.ProxyAddr, name)
	cmd := exec.CommandContext(ctx, "script", "-qec", login, "/dev/null")
	cmd.Env = append(os.Environ(), "TELEPORT_HOME="+u.Home)
	cmd.Stdin = strings.NewReader(password + "\n")
	outb, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("tsh login %s: %w\n%s", name, err, outb)
	}
	if !bytes.Contains(outb, []byte("Logged in as")) {
		return nil, fmt.Errorf("tsh login %s: not logged in:\n%s", name, outb)
	}
	return u, nil
}

// Tsh runs tsh as the user, with stdin.
// --insecure only concerns tsh's trust in the proxy's self-signed web
// certificate in the world; the database path stays verify-full.
func (u *TshUser) Tsh(ctx context.Context, stdin string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(u.tp.BinDir, "tsh"), append([]string{"--insecure", "--proxy=" + u.tp.ProxyAddr}, args...)...)
	cmd.Env = append(os.Environ(), "TELEPORT_HOME="+u.Home)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("tsh %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

// DBNames lists the db resources the user sees (`tsh db ls --format=json`).
func (u *TshUser) DBNames(ctx context.Context) ([]string, error) {
	out, err := u.Tsh(ctx, "", "db", "ls", "--format=json")
	if err != nil {
		return nil, err
	}
	var dbs []struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(out, &dbs); err != nil {
		return nil, fmt.Errorf("tsh db ls: %w: %s", err, out)
	}
	names := make([]string, 0, len(dbs))
	for _, d := range dbs {
		names = append(names, d.Metadata.Name)
	}
	return names, nil
}

// Query runs one SQL statement through `tsh db connect` (psql reads stdin).
func (u *TshUser) Query(ctx context.Context, db, dbUser, dbName, sql string) (string, error) {
	out, err := u.Tsh(ctx, sql+"\n", "db", "connect", db, "--db-user="+dbUser, "--db-name="+dbName)
	return string(out), err
}

func setPassword(ctx context.Context, token, password string) error {
	csrf := randomHex(32)
	body, _ := json.Marshal(map[string]string{"token": token, "password": base64.StdEncoding.EncodeToString([]byte(password))})
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "https://localhost:3080/v1/webapi/users/password/token", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-CSRF-Token", csrf)
	req.AddCookie(&http.Cookie{Name: "__Host-grv_csrf", Value: csrf})
	resp, err := insecureWebClient().Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("set password: %s", resp.Status)
	}
	return nil
}

func jsonList(s []string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// AuditCount counts the events of the given types (e.g. db.create) in
// Teleport's own audit log: writes counted independently of the controller.
func (tp *Teleport) AuditCount(t interface{ Fatal(...any) }, events ...string) int {
	return tp.AuditCountBy(t, "", events...)
}

// AuditCountBy is AuditCount for the events of one Teleport user ("" for all).
func (tp *Teleport) AuditCountBy(t interface{ Fatal(...any) }, user string, events ...string) int {
	files, err := filepath.Glob(filepath.Join(tp.Dir, "data", "log", "*", "*.log"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range bytes.Split(b, []byte("\n")) {
			var ev struct {
				Event string `json:"event"`
				User  string `json:"user"`
			}
			if json.Unmarshal(line, &ev) == nil && slices.Contains(events, ev.Event) && (user == "" || ev.User == user) {
				n++
			}
		}
	}
	return n
}

// Agent is a database agent of its own (a Teleport process with db_service
// only), joined to the world's Teleport with a db token.
type Agent struct {
	Name, Dir, Config string
	bin               string
	proc              *Process
}

const agentConfig = `version: v3
teleport:
  nodename: %[1]s
  data_dir: %[2]s/data
  auth_token: %[3]s
  # a database agent joins through the proxy (Teleport refuses auth_server
  # with db_service); --insecure: the world's proxy has a self-signed web
  # certificate
  proxy_server: localhost:3080
  log:
    output: stderr
    severity: INFO
auth_service:
  enabled: false
proxy_service:
  enabled: false
ssh_service:
  enabled: false
db_service:
  enabled: true
  resources:
  - labels:
%[4]s`

// StartAgent starts a database agent named name that serves the db
// resources matching selector.
func (tp *Teleport) StartAgent(ctx context.Context, name string, selector map[string]string) (*Agent, error) {
	out, err := tp.Tctl(ctx, "", "tokens", "add", "--type=db", "--ttl=1h", "--format=text")
	if err != nil {
		return nil, err
	}
	token := strings.TrimSpace(string(out))
	var labels strings.Builder
	for _, k := range slices.Sorted(maps.Keys(selector)) {
		fmt.Fprintf(&labels, "      %q: %q\n", k, selector[k])
	}
	a := &Agent{Name: name, Dir: filepath.Join(tp.Dir, "agent-"+name), bin: filepath.Join(tp.BinDir, "teleport")}
	a.Config = filepath.Join(a.Dir, "teleport.yaml")
	if err := os.MkdirAll(a.Dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(a.Config, fmt.Appendf(nil, agentConfig, name, a.Dir, token, labels.String()), 0o600); err != nil {
		return nil, err
	}
	return a, a.Start()
}

// Start (re)starts the agent on its data directory and waits until it has
// joined (it logs that its database service is ready... or its first
// heartbeat): the test then waits on what it checks.
func (a *Agent) Start() error {
	p, err := StartProcess(a.Dir, "agent", nil, a.bin, "start", "--insecure", "-c", a.Config)
	if err != nil {
		return err
	}
	a.proc = p
	return waitFor(60*time.Second, 100*time.Millisecond, func() error {
		if done, err := p.Exited(); done {
			return fmt.Errorf("agent %s exited: %w\n%s", a.Name, err, p.Tail(8<<10))
		}
		if !strings.Contains(p.Tail(64<<10), "Database service has successfully started") {
			return fmt.Errorf("agent %s not started yet", a.Name)
		}
		return nil
	})
}

// Stop stops the agent with SIGTERM, as Kubernetes stops a Pod: Teleport's
// fast shutdown, which leaves its db_server heartbeats behind until they
// expire (10 min).
func (a *Agent) Stop() {
	if a.proc != nil {
		a.proc.Stop()
	}
}

// Shutdown stops the agent with SIGQUIT: Teleport's graceful shutdown,
// which deletes its db_server heartbeats.
func (a *Agent) Shutdown() error {
	if a.proc == nil {
		return nil
	}
	if err := syscall.Kill(a.proc.PID(), syscall.SIGQUIT); err != nil {
		return err
	}
	select {
	case <-a.proc.Done():
		return nil
	case <-time.After(30 * time.Second):
		a.proc.Stop()
		return fmt.Errorf("agent %s: no graceful shutdown within 30 s", a.Name)
	}
}

// Logs is the tail of the agent's log.
func (a *Agent) Logs() string {
	if a.proc == nil {
		return ""
	}
	return a.proc.Tail(16 << 10)
}
