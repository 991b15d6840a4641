package world

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

const envInside = "CNPG_TELEPORT_WORLD_NS"

// Service names a CNPG Cluster whose service DNS names the world resolves:
// <cluster>-{rw,ro,r}[.<ns>[.svc[.cluster.local]]] all map to one loopback
// address, where the world's PostgreSQL for that Cluster listens on 5432.
type Service struct {
	Namespace, Cluster string
}

var services []Service

// Main runs the package's tests inside a private user, mount and network
// namespace (loopback only), re-executing the test binary under
// `unshare -rmn` when it is not inside one yet. Inside, a private hosts file
// is bind-mounted over /etc/hosts so that the given Clusters' service names
// resolve to loopback addresses: Teleport's database agent then dials exactly
// the URI the controller registered, with verify-full on that name.
//
// Teleport probes cloud metadata hosts; in the namespace those dials fail at
// once. Fixed ports (3025, 3080, 5432) do not clash across test packages,
// each of which has its own namespace. It works as root (CI) and as a normal
// user with unprivileged user namespaces.
func Main(m *testing.M, svcs ...Service) {
	Enter(svcs...)
	os.Exit(m.Run())
}

// Enter is Main for a program (make demo): outside the namespace it re-runs
// the program inside one and exits with its code; inside it sets the
// namespace up and returns.
func Enter(svcs ...Service) {
	services = svcs
	if os.Getenv(envInside) == "" {
		os.Exit(reexec())
	}
	if err := setupNamespace(); err != nil {
		fmt.Fprintln(os.Stderr, "world: namespace setup:", err)
		os.Exit(2)
	}
}

// Inside reports whether this process runs inside the world's namespace.
func Inside() bool { return os.Getenv(envInside) != "" }

func reexec() int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "world:", err)
		return 2
	}
	// Everything the tests need from the network (modules, binaries) must be
	// there before: inside, only loopback exists.
	if err := prefetch(); err != nil {
		fmt.Fprintln(os.Stderr, "world:", err)
		return 2
	}
	args := append([]string{"-rmn", "--", exe}, os.Args[1:]...)
	cmd := exec.Command("unshare", args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), envInside+"=1", "HOST_UID="+fmt.Sprint(os.Getuid()))
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "world: unshare -rmn (needs util-linux and user namespaces):", err)
		return 2
	}
	return 0
}

// prefetch resolves, before entering the namespace, what needs the module
// proxy or a build: the module directories of the CRDs and the binaries.
func prefetch() error {
	for _, m := range []string{cnpgModule, certManagerModule} {
		if os.Getenv(moduleEnv(m)) != "" {
			continue
		}
		d, err := moduleDir(m)
		if err != nil {
			return err
		}
		_ = os.Setenv(moduleEnv(m), d)
	}
	for _, tool := range []string{"kube-apiserver", "etcd", "teleport"} {
		d, err := ToolDir(tool)
		if err != nil {
			return err
		}
		_ = os.Setenv(toolEnv[tool], d)
	}
	for env, bin := range map[string]func() (string, error){envCertManagerBin: CertManagerBin, envControllerBin: ControllerBin} {
		p, err := bin()
		if err != nil {
			return err
		}
		if err := os.Setenv(env, p); err != nil {
			return err
		}
	}
	// Teleport's tsh runs psql for `tsh db connect`.
	if _, err := exec.LookPath("psql"); err != nil {
		return fmt.Errorf("psql not found (make test installs postgresql): %w", err)
	}
	return nil
}

func moduleEnv(module string) string {
	return "WORLD_MODDIR_" + strings.NewReplacer("/", "_", ".", "_", "-", "_").Replace(module)
}

func setupNamespace() error {
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("ip link set lo up: %w: %s", err, out)
	}
	dir, err := os.MkdirTemp("", "world-hosts")
	if err != nil {
		return err
	}
	hosts := filepath.Join(dir, "hosts")
	if err := os.WriteFile(hosts, []byte(hostsFile(services)), 0o644); err != nil { //nolint:gosec // a hosts file is world-readable
		return err
	}
	if err := syscall.Mount(hosts, "/etc/hosts", "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mount %s over /etc/hosts: %w", hosts, err)
	}
	return nil
}

// ServiceIP is the loopback address the Cluster's service names resolve to.
func ServiceIP(namespace, cluster string) (string, error) {
	for i, s := range services {
		if s.Namespace == namespace && s.Cluster == cluster {
			return fmt.Sprintf("127.0.1.%d", i+1), nil
		}
	}
	return "", fmt.Errorf("world: %s/%s is not among the services passed to world.Main", namespace, cluster)
}

// ServiceNames are the DNS names of a Cluster's services, as CNPG's server
// certificate lists them.
func ServiceNames(namespace, cluster, domain string) []string {
	var names []string
	for _, ep := range []string{"rw", "ro", "r"} {
		svc := cluster + "-" + ep
		names = append(names, svc, svc+"."+namespace, svc+"."+namespace+".svc", svc+"."+namespace+".svc."+domain)
	}
	return names
}

func hostsFile(svcs []Service) string {
	var b strings.Builder
	b.WriteString("127.0.0.1 localhost\n::1 localhost\n")
	for i, s := range svcs {
		fmt.Fprintf(&b, "127.0.1.%d %s\n", i+1, strings.Join(ServiceNames(s.Namespace, s.Cluster, "cluster.local"), " "))
	}
	return b.String()
}
