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

// Main runs the package's tests inside a private user, mount and network
// namespace, re-executing the test binary under `unshare -rmn` when it is not
// inside one yet. Inside there is no route out: only loopback, the world's
// address (WorldAddr, where the apiserver listens) and the Pods' own network
// namespaces, joined to the world's by veth pairs. A private hosts file is
// bind-mounted over /etc/hosts; the world's kubelet keeps Service names in it
// pointing at the Pods behind them, so Teleport's database agent dials exactly
// the URI the controller registered, with verify-full on that name.
//
// Teleport probes cloud metadata hosts; in the namespace those dials fail at
// once. Fixed ports (3025, 3080) do not clash across test packages, each of
// which has its own namespace.
func Main(m *testing.M) {
	Enter()
	os.Exit(m.Run())
}

// Enter is Main for a program (make demo): outside the namespace it re-runs
// the program inside one and exits with its code; inside it sets the
// namespace up and returns.
func Enter() {
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
	for _, tool := range []string{"kube-apiserver", "etcd", "teleport", "cnpg", "pgbouncer", "monitoring-crds"} {
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
	// Teleport's tsh runs psql for `tsh db connect`; the kubelet needs the rest.
	for _, bin := range []string{"psql", "ip", "unshare", "nsenter"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s not found (make deps installs it): %w", bin, err)
		}
	}
	if _, err := PostgresBinDir(); err != nil {
		return err
	}
	return nil
}

func moduleEnv(module string) string {
	return "WORLD_MODDIR_" + strings.NewReplacer("/", "_", ".", "_", "-", "_").Replace(module)
}

// WorldAddr is the world's own address inside its network namespace: the
// apiserver listens there, and it is every Pod's gateway.
const WorldAddr = "10.0.255.254"

// hostsPath is the hosts file bind-mounted over /etc/hosts (see Main).
var hostsPath string

func setupNamespace() error {
	for _, argv := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "addr", "add", WorldAddr + "/32", "dev", "lo"},
	} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, out)
		}
	}
	// Pods reach each other through the world's namespace.
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644); err != nil { //nolint:gosec // a sysctl
		return fmt.Errorf("ip_forward: %w", err)
	}
	dir, err := os.MkdirTemp("", "world-hosts")
	if err != nil {
		return err
	}
	hostsPath = filepath.Join(dir, "hosts")
	if err := os.WriteFile(hostsPath, []byte(hostsHeader), 0o644); err != nil { //nolint:gosec // a hosts file is world-readable
		return err
	}
	if err := syscall.Mount(hostsPath, "/etc/hosts", "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mount %s over /etc/hosts: %w", hostsPath, err)
	}
	return nil
}

const hostsHeader = "127.0.0.1 localhost\n::1 localhost\n"

// ServiceNames are the DNS names of a Cluster's services, as CNPG's server
// certificate lists them.
func ServiceNames(namespace, cluster, domain string) []string {
	var names []string
	for _, ep := range []string{"rw", "ro", "r"} {
		names = append(names, serviceDNSNames(cluster+"-"+ep, namespace, domain)...)
	}
	return names
}

func serviceDNSNames(svc, namespace, domain string) []string {
	return []string{svc, svc + "." + namespace, svc + "." + namespace + ".svc", svc + "." + namespace + ".svc." + domain}
}
