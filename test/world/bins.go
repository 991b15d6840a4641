package world

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

// Binaries of the world. The Makefile builds them once (cached outside the
// repository, keyed by version) and exports their directories; when a test
// runs without the Makefile, the same hack/tools.sh answers from its cache
// (it builds only when the cache is empty, which needs the module proxy, so
// outside the network namespace).
const (
	envKubeAPIServerDir = "KUBE_APISERVER_DIR"
	envEtcdDir          = "ETCD_DIR"
	envTeleportBinDir   = "TELEPORT_BIN_DIR"
	envCertManagerBin   = "CERT_MANAGER_BIN"
	envControllerBin    = "CNPG_TELEPORT_BIN"
	envPostgresBinDir   = "POSTGRES_BIN_DIR"
	envCNPGBinDir       = "CNPG_BIN_DIR"
	envPgBouncerBinDir  = "PGBOUNCER_BIN_DIR"
	envHelmBinDir       = "HELM_BIN_DIR"
	envPromRulesBinDir  = "PROMRULES_BIN_DIR"
	envMonitoringCRDs   = "MONITORING_CRDS_DIR"
	envKubectlBinDir    = "KUBECTL_BIN_DIR"
)

// RepoRoot is the repository root, found from this source file.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

var toolDirs sync.Map

var toolEnv = map[string]string{
	"kube-apiserver": envKubeAPIServerDir, "etcd": envEtcdDir, "teleport": envTeleportBinDir,
	"cnpg": envCNPGBinDir, "pgbouncer": envPgBouncerBinDir, "helm": envHelmBinDir,
	"promrules": envPromRulesBinDir, "monitoring-crds": envMonitoringCRDs, "kubectl": envKubectlBinDir,
}

// ToolDir returns the directory holding the binaries of tool (kube-apiserver
// and kube-controller-manager, etcd, teleport, cnpg's manager, pgbouncer, helm,
// promrules, kubectl) or, for monitoring-crds, the Prometheus operator's CRDs,
// from its environment variable or hack/tools.sh.
func ToolDir(tool string) (string, error) {
	if d := os.Getenv(toolEnv[tool]); d != "" {
		return d, nil
	}
	if d, ok := toolDirs.Load(tool); ok {
		return d.(string), nil
	}
	var out, errb bytes.Buffer
	cmd := exec.Command(filepath.Join(RepoRoot(), "hack", "tools.sh"), tool)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("hack/tools.sh %s (run `make test`, which builds it first): %w\n%s", tool, err, errb.String())
	}
	d := strings.TrimSpace(out.String())
	toolDirs.Store(tool, d)
	return d, nil
}

var projectBins sync.Map // package -> *projectBin

type projectBin struct {
	once sync.Once
	path string
	err  error
}

// buildProjectBin returns the binary of a main package of this repository:
// from env when set (the Makefile builds into bin/), else built once per
// test binary with the warm Go cache.
func buildProjectBin(env, pkg string) (string, error) {
	if p := os.Getenv(env); p != "" {
		return p, nil
	}
	v, _ := projectBins.LoadOrStore(pkg, &projectBin{})
	b := v.(*projectBin)
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "world-bin")
		if err != nil {
			b.err = err
			return
		}
		p := filepath.Join(dir, filepath.Base(pkg))
		cmd := exec.Command("go", "build", "-o", p, pkg)
		cmd.Dir = RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
			return
		}
		b.path = p
	})
	return b.path, b.err
}

// CertManagerBin is the test world's cert-manager controller (test/cmd/cert-manager).
func CertManagerBin() (string, error) {
	return buildProjectBin(envCertManagerBin, "./test/cmd/cert-manager")
}

// ControllerBin is the cnpg-teleport manager binary (cmd/cnpg-teleport).
func ControllerBin() (string, error) {
	return buildProjectBin(envControllerBin, "./cmd/cnpg-teleport")
}

// PostgresBinDir returns the PostgreSQL server binaries directory (Debian layout).
func PostgresBinDir() (string, error) {
	if d := os.Getenv(envPostgresBinDir); d != "" {
		return d, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(matches) == 0 {
		return "", fmt.Errorf("no PostgreSQL server under /usr/lib/postgresql (make test installs it)")
	}
	return filepath.Dir(matches[len(matches)-1]), nil
}

// ModuleDir returns the module cache directory of a dependency pinned in
// go.mod, so a test can read what the binary is built from (a library's
// metric names, say) at the version it is built with.
func ModuleDir(module string) (string, error) { return moduleDir(module) }

// moduleDir returns the module cache directory of a dependency pinned in go.mod.
func moduleDir(module string) (string, error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", module)
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=readonly", "GOWORK=off")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go list -m %s: %w\n%s", module, err, out)
	}
	d := strings.TrimSpace(string(out))
	if d == "" {
		return "", fmt.Errorf("module %s is not in the module cache (run go mod download)", module)
	}
	return d, nil
}
