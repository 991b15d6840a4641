package world

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// TestToolsShareBuilds: every package the kube-apiserver build (hack/tools.sh,
// test/tools/kube-apiserver) shares with the project's own builds, or with
// kubectl's, helm's, etcd's or CNPG's (Kubernetes' own modules aside), comes from the same module version in both, so that a cold
// make test compiles it once, not twice (with -trimpath on neither side). A
// go.mod bump on one side only would not fail a build, only make the first
// CI run of a new machine minutes slower: this is its guard. A count, not a time.
func TestToolsShareBuilds(t *testing.T) {
	// The one module that cannot follow: the project pins otelgrpc v0.60.0 by a replace (teleport/api
	// calls what later versions removed; README, Pinned dependencies). 5 shared packages depend on it.
	// And etcd's own modules: the server is built at its version, v3.7.2, kube-apiserver and the project use
	// the client of v3.7.0 (18 packages).
	pinned := map[string]bool{"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc": true,
		"go.etcd.io/etcd/api/v3": true, "go.etcd.io/etcd/client/pkg/v3": true, "go.etcd.io/etcd/client/v3": true}
	if testing.Short() {
		t.Skip("loads three package graphs (seconds)")
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	kas := modulePackages(t, filepath.Join(root, "test/tools/kube-apiserver"),
		"k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes/cmd/kube-controller-manager")
	kubernetes := func(m string) bool { return strings.HasPrefix(m, "k8s.io/") || strings.HasPrefix(m, "sigs.k8s.io/") }
	for _, other := range []struct {
		name  string
		pkgs  map[string]string
		apart func(module string) bool // modules it may take at other versions
	}{
		{"the project (go list -deps -test ./...)", modulePackages(t, root, "./..."), nil},
		{"kubectl (test/tools/kubectl)", modulePackages(t, filepath.Join(root, "test/tools/kubectl"), "."), nil},
		{"helm (test/tools/helm)", modulePackages(t, filepath.Join(root, "test/tools/helm"), "helm.sh/helm/v3/cmd/helm"), nil},
		{"etcd (test/tools/etcd)", modulePackages(t, filepath.Join(root, "test/tools/etcd"), "go.etcd.io/etcd/server/v3"), nil},
		// CNPG v1.30.0 needs its own k8s.io v0.36 and controller-runtime v0.24 (it does not compile with v0.37).
		{"CNPG (test/tools/cnpg)", modulePackages(t, filepath.Join(root, "test/tools/cnpg"), "github.com/cloudnative-pg/cloudnative-pg/cmd/manager"), kubernetes},
	} {
		shared, differ := 0, map[string]string{}
		for pkg, version := range other.pkgs {
			v, ok := kas[pkg]
			if !ok {
				continue
			}
			module := strings.Fields(version)[0]
			if other.apart != nil && other.apart(module) {
				continue
			}
			shared++
			if v != version && !pinned[module] {
				differ[module] = fmt.Sprintf("%s here, %s in kube-apiserver's", version, v)
			}
		}
		t.Logf("%s: %d packages shared with the kube-apiserver build, %d modules at another version", other.name, shared, len(differ))
		if shared < 200 {
			t.Errorf("%s: only %d packages shared with kube-apiserver's build: is the package list right?", other.name, shared)
		}
		for _, m := range slices.Sorted(func(yield func(string) bool) {
			for m := range differ {
				if !yield(m) {
					return
				}
			}
		}) {
			t.Errorf("%s: %s: its packages compile twice in a cold make test; require the newer version in both go.mod files", other.name, differ[m])
		}
	}
}

// modulePackages maps each non-standard package that building pkgs in dir
// compiles to "module version" (the replacement's version where replaced).
func modulePackages(t *testing.T, dir string, pkgs ...string) map[string]string {
	t.Helper()
	args := append([]string{"list", "-deps", "-test", "-f",
		`{{if .Module}}{{.ImportPath}} {{.Module.Path}} {{if .Module.Replace}}{{.Module.Replace.Version}}{{else}}{{.Module.Version}}{{end}}{{end}}`}, pkgs...)
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go list in %s: %v\n%s", dir, err, stderr)
	}
	m := map[string]string{}
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) != 3 || f[2] == "" || strings.Contains(f[0], " ") {
			continue // the main module's own packages have no version
		}
		pkg := strings.TrimSuffix(f[0], ".test")
		if i := strings.Index(pkg, " ["); i >= 0 {
			pkg = pkg[:i]
		}
		m[pkg] = f[1] + " " + f[2]
	}
	return m
}
