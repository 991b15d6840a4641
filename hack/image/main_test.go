package main

import (
	"archive/tar"
	"bytes"
	"crypto/x509"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

const (
	hostCA      = "/etc/ssl/certs/ca-certificates.crt"
	testVersion = "v0.0.0-imagetest"
	testRef     = "cnpg-teleport:imagetest"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// controllerBinary builds the real cnpg-teleport, static, once per test run.
func controllerBinary(t *testing.T) []byte {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "image-test-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "cnpg-teleport")
		// No -trimpath (make image's): the same compile flags as make world-tools'
		// bin/cnpg-teleport, so only the link runs here (-X is a link flag).
		cmd := exec.Command("go", "build", "-ldflags", "-X main.version="+testVersion, "-o", binPath, "./cmd/cnpg-teleport")
		cmd.Dir = "../.."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = errors.New("go build ./cmd/cnpg-teleport: " + err.Error() + "\n" + string(out))
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	b, err := os.ReadFile(binPath) //nolint:gosec // the binary this test built
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		_ = os.RemoveAll(filepath.Dir(binPath))
	}
	if outDir != "" {
		_ = os.RemoveAll(outDir)
	}
	os.Exit(code)
}

func hostCABytes(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(hostCA)
	if err != nil {
		t.Fatalf("%v (Debian's ca-certificates; make deps installs it)", err)
	}
	return b
}

// written builds the image with the real binary and CA file, writes it the way
// `make image` does, and reads both outputs back.
func written(t *testing.T) (fromLayout, fromTar v1.Image, tarPath string) {
	t.Helper()
	outOnce.Do(func() { outLayout, outTar, outPath = writeOnce(t) })
	if outLayout == nil {
		t.Fatal("writing the image failed (see the first test)")
	}
	return outLayout, outTar, outPath
}

var (
	outOnce           sync.Once
	outLayout, outTar v1.Image
	outPath           string
	outDir            string
)

func writeOnce(t *testing.T) (fromLayout, fromTar v1.Image, tarPath string) {
	t.Helper()
	img, err := Build(Options{Binary: controllerBinary(t), CACert: hostCABytes(t)})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "image-out-")
	if err != nil {
		t.Fatal(err)
	}
	outDir = dir
	tarPath = filepath.Join(dir, "image.tar")
	if err := WriteLayout(filepath.Join(dir, "layout"), testRef, img); err != nil {
		t.Fatal(err)
	}
	if err := WriteTarball(tarPath, testRef, img); err != nil {
		t.Fatal(err)
	}
	idx, err := layout.ImageIndexFromPath(filepath.Join(dir, "layout"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 || m.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != testRef {
		t.Fatalf("layout index: %+v", m.Manifests)
	}
	if fromLayout, err = idx.Image(m.Manifests[0].Digest); err != nil {
		t.Fatal(err)
	}
	if fromTar, err = tarball.ImageFromPath(tarPath, nil); err != nil {
		t.Fatal(err)
	}
	return fromLayout, fromTar, tarPath
}

// file is one entry of the image's flattened filesystem.
type file struct {
	hdr  *tar.Header
	body []byte
}

// filesystem flattens the image's layers (whiteouts applied) into path -> entry.
func filesystem(t *testing.T, img v1.Image) map[string]file {
	t.Helper()
	rc := mutate.Extract(img)
	defer func() { _ = rc.Close() }()
	fs := map[string]file{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return fs
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		fs["/"+strings.Trim(h.Name, "/")] = file{h, body}
	}
}

func TestConfig(t *testing.T) {
	img, fromTar, _ := written(t)
	for name, im := range map[string]v1.Image{"layout": img, "tarball": fromTar} {
		cf, err := im.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Config.User != "65532:65532" {
			t.Errorf("%s: user %q, want 65532:65532 (non-root)", name, cf.Config.User)
		}
		if !slices.Equal(cf.Config.Entrypoint, []string{"/cnpg-teleport"}) || len(cf.Config.Cmd) != 0 {
			t.Errorf("%s: entrypoint %q cmd %q, want [/cnpg-teleport] and no cmd", name, cf.Config.Entrypoint, cf.Config.Cmd)
		}
		if cf.OS != "linux" || cf.Architecture != "amd64" {
			t.Errorf("%s: platform %s/%s, want linux/amd64", name, cf.OS, cf.Architecture)
		}
		if cf.Created.Unix() != 0 || len(cf.History) != 1 || cf.History[0].Created.Unix() != 0 {
			t.Errorf("%s: created %v, history %+v: want the epoch (determinism)", name, cf.Created, cf.History)
		}
		if !slices.Contains(cf.Config.Env, "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt") {
			t.Errorf("%s: env %q", name, cf.Config.Env)
		}
	}
	// docker load's format has its own manifest: the config and layers are the same bytes.
	c1, _ := img.ConfigName()
	c2, _ := fromTar.ConfigName()
	l1, _ := img.Layers()
	l2, _ := fromTar.Layers()
	if c1 != c2 || len(l1) != 1 || len(l2) != 1 {
		t.Fatalf("the layout (config %s, %d layers) and the tarball (config %s, %d layers) differ", c1, len(l1), c2, len(l2))
	}
	d1, _ := l1[0].DiffID()
	d2, _ := l2[0].DiffID()
	if d1 != d2 {
		t.Errorf("the layout's layer %s, the tarball's %s", d1, d2)
	}
}

func TestFiles(t *testing.T) {
	img, _, _ := written(t)
	fs := filesystem(t, img)
	want := []string{"/cnpg-teleport", "/etc", "/etc/group", "/etc/nsswitch.conf", "/etc/passwd", "/etc/ssl",
		"/etc/ssl/certs", "/etc/ssl/certs/ca-certificates.crt", "/home", "/home/nonroot", "/root", "/tmp"}
	got := make([]string, 0, len(fs))
	for p := range fs {
		got = append(got, p)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("image files %q,\nwant exactly %q (no shell, no package manager, nothing else)", got, want)
	}
	for p, f := range fs {
		base := filepath.Base(p)
		if p == "/bin/sh" || base == "sh" || base == "bash" || base == "busybox" || base == "dash" {
			t.Errorf("a shell in the image: %s", p)
		}
		if !f.hdr.ModTime.Equal(time.Unix(0, 0)) {
			t.Errorf("%s: mtime %v, want the epoch (determinism)", p, f.hdr.ModTime)
		}
	}
	check := func(p string, typ byte, mode os.FileMode, uid, gid int) file {
		t.Helper()
		f, ok := fs[p]
		if !ok {
			t.Errorf("%s missing", p)
			return file{hdr: &tar.Header{}}
		}
		if f.hdr.Typeflag != typ || f.hdr.FileInfo().Mode()&(os.ModePerm|os.ModeSticky) != mode || f.hdr.Uid != uid || f.hdr.Gid != gid {
			t.Errorf("%s: type %c mode %v owner %d:%d, want %c %v %d:%d", p, f.hdr.Typeflag,
				f.hdr.FileInfo().Mode()&(os.ModePerm|os.ModeSticky), f.hdr.Uid, f.hdr.Gid, typ, mode, uid, gid)
		}
		return f
	}
	bin := check("/cnpg-teleport", tar.TypeReg, 0o755, 0, 0)
	if !bytes.Equal(bin.body, controllerBinary(t)) {
		t.Error("/cnpg-teleport is not the binary given")
	}
	check("/tmp", tar.TypeDir, 0o777|os.ModeSticky, 0, 0)
	check("/home/nonroot", tar.TypeDir, 0o700, Nonroot, Nonroot)
	check("/root", tar.TypeDir, 0o700, 0, 0)
	pw := check("/etc/passwd", tar.TypeReg, 0o644, 0, 0)
	for _, line := range []string{"root:x:0:0:root:/root:/sbin/nologin", "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin"} {
		if !slices.Contains(strings.Split(string(pw.body), "\n"), line) {
			t.Errorf("/etc/passwd has no %q:\n%s", line, pw.body)
		}
	}
	gr := check("/etc/group", tar.TypeReg, 0o644, 0, 0)
	for _, line := range []string{"root:x:0:", "nonroot:x:65532:"} {
		if !slices.Contains(strings.Split(string(gr.body), "\n"), line) {
			t.Errorf("/etc/group has no %q:\n%s", line, gr.body)
		}
	}
	ca := check("/etc/ssl/certs/ca-certificates.crt", tar.TypeReg, 0o644, 0, 0)
	if !bytes.Equal(ca.body, hostCABytes(t)) || !x509.NewCertPool().AppendCertsFromPEM(ca.body) {
		t.Error("the CA bundle is not the machine's ca-certificates.crt, or holds no certificate")
	}
}

// TestBinaryRuns extracts /cnpg-teleport from the layer and runs --version.
func TestBinaryRuns(t *testing.T) {
	img, _, _ := written(t)
	f, ok := filesystem(t, img)["/cnpg-teleport"]
	if !ok {
		t.Fatal("no /cnpg-teleport")
	}
	p := filepath.Join(t.TempDir(), "cnpg-teleport")
	if err := os.WriteFile(p, f.body, f.hdr.FileInfo().Mode().Perm()); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(p, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("the extracted binary (mode %v): --version: %v\n%s", f.hdr.FileInfo().Mode(), err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "cnpg-teleport "+testVersion {
		t.Fatalf("--version printed %q, want %q", got, "cnpg-teleport "+testVersion)
	}
}

func TestDeterministic(t *testing.T) {
	o := Options{Binary: controllerBinary(t), CACert: hostCABytes(t)}
	var digests []v1.Hash
	for range 2 {
		img, err := Build(o)
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d)
	}
	if digests[0] != digests[1] {
		t.Fatalf("the same inputs gave %s and %s", digests[0], digests[1])
	}
	o.CACert = append(slices.Clone(o.CACert), '\n')
	img, err := Build(o)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := img.Digest(); d == digests[0] {
		t.Fatal("a different input gave the same digest")
	}
}

func TestRefusesUnfitBinary(t *testing.T) {
	ca := hostCABytes(t)
	dynamic, err := os.ReadFile("/bin/ls") // Debian's: dynamically linked
	if err != nil {
		t.Skip(err)
	}
	for name, b := range map[string][]byte{"dynamic": dynamic, "not ELF": []byte("#!/bin/sh\necho hi\n")} {
		if _, err := Build(Options{Binary: b, CACert: ca}); err == nil {
			t.Errorf("%s: accepted (it could not run in an image without libc or a shell)", name)
		}
	}
	if _, err := Build(Options{Binary: controllerBinary(t)}); err == nil {
		t.Error("no CA certificates: accepted")
	}
}

// TestPodman runs the image with the machine's podman, when it has one (it is
// not needed otherwise: nothing in make test installs it). Here it needs runc
// and cgroupfs (crun refuses this machine's hybrid cgroups), vfs storage, and
// ulimits no higher than the machine's (podman's root default of 1048576 open
// files needs CAP_SYS_RESOURCE).
func TestPodman(t *testing.T) {
	podman, err := exec.LookPath("podman")
	if err != nil {
		t.Skip("no podman on PATH")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("podman without runc (crun fails on hybrid cgroups)")
	}
	_, _, tarPath := written(t)
	store := t.TempDir()
	base := []string{"--root", filepath.Join(store, "root"), "--runroot", filepath.Join(store, "run"),
		"--storage-driver", "vfs", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "none"}
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(podman, append(slices.Clone(base), args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	run("load", "-i", tarPath)
	t.Cleanup(func() { _ = exec.Command(podman, append(slices.Clone(base), "rmi", "-af")...).Run() })
	limits := []string{"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"}
	if got := run(append(append([]string{"run", "--rm", "--network", "none"}, limits...), testRef, "--version")...); got != "cnpg-teleport "+testVersion {
		t.Fatalf("podman run --version: %q", got)
	}
	if got := run("image", "inspect", "--format", "{{.Config.User}} {{.Config.Entrypoint}}", testRef); got != "65532:65532 [/cnpg-teleport]" {
		t.Fatalf("podman sees user and entrypoint %q", got)
	}
	// No shell: running one must fail.
	args := append(append([]string{"run", "--rm", "--network", "none"}, limits...), "--entrypoint", "/bin/sh", testRef, "-c", "true")
	if out, err := exec.Command(podman, append(slices.Clone(base), args...)...).CombinedOutput(); err == nil {
		t.Fatalf("/bin/sh ran in the image:\n%s", out)
	}
}
