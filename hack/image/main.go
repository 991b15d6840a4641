// Command image builds the cnpg-teleport container image without a container
// engine: one from-scratch layer with the content of distroless static nonroot
// (CA certificates, passwd and group with root, nobody and nonroot 65532,
// /tmp 1777, /home/nonroot) and the static binary at /cnpg-teleport, run as
// 65532:65532. It writes an OCI image layout and a tarball `docker load` and
// `podman load` read, and prints the image digest.
//
// Every timestamp is the Unix epoch, so the same binary and CA file give the
// same digest.
//
//	go run . -binary ../../bin/cnpg-teleport -layout ../../bin/image -tar ../../bin/cnpg-teleport-image.tar
package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Nonroot is distroless's nonroot user and group.
const Nonroot = 65532

// epoch is every timestamp in the image (determinism).
var epoch = time.Unix(0, 0).UTC()

// passwd and group are distroless static's (base/static in
// GoogleContainerTools/distroless): root, nobody and nonroot, no login shell.
const (
	passwd = "root:x:0:0:root:/root:/sbin/nologin\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
		"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	group = "root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n"
	// nsswitch makes Go's resolver read /etc/hosts before DNS, as distroless does.
	nsswitch = "hosts: files dns\n"
)

// Options are the image's inputs.
type Options struct {
	Binary []byte // the static linux/amd64 cnpg-teleport binary
	CACert []byte // the CA bundle (Debian's /etc/ssl/certs/ca-certificates.crt)
}

// entry is one file or directory of the layer.
type entry struct {
	name     string
	mode     int64
	uid, gid int
	body     []byte // nil: a directory
}

// entries is the layer's content, parents before children.
func entries(o Options) []entry {
	dir := func(n string, mode int64, id int) entry { return entry{name: n, mode: mode, uid: id, gid: id} }
	file := func(n string, mode int64, body []byte) entry { return entry{name: n, mode: mode, body: body} }
	return []entry{
		dir("etc/", 0o755, 0),
		file("etc/group", 0o644, []byte(group)),
		file("etc/nsswitch.conf", 0o644, []byte(nsswitch)),
		file("etc/passwd", 0o644, []byte(passwd)),
		dir("etc/ssl/", 0o755, 0),
		dir("etc/ssl/certs/", 0o755, 0),
		file("etc/ssl/certs/ca-certificates.crt", 0o644, o.CACert),
		dir("home/", 0o755, 0),
		dir("home/nonroot/", 0o700, Nonroot),
		dir("root/", 0o700, 0),
		dir("tmp/", 0o1777, 0),
		file("cnpg-teleport", 0o755, o.Binary),
	}
}

// layerTar is the uncompressed layer: fixed order, owners and times.
func layerTar(o Options) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries(o) {
		h := &tar.Header{Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.gid, ModTime: epoch, Format: tar.FormatPAX}
		if e.body == nil {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// checkStatic refuses what would not run in an image without libc: a binary
// that is not linux/amd64 ELF, or one that asks for a dynamic loader.
func checkStatic(b []byte) error {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("the binary is not ELF: %w", err)
	}
	defer func() { _ = f.Close() }()
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("the binary is for %v, want x86-64 (GOARCH=amd64)", f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("the binary is dynamically linked (build it with CGO_ENABLED=0): the image has no libc")
		}
	}
	return nil
}

// Build makes the image.
func Build(o Options) (v1.Image, error) {
	if err := checkStatic(o.Binary); err != nil {
		return nil, err
	}
	if len(o.CACert) == 0 {
		return nil, errors.New("no CA certificates")
	}
	raw, err := layerTar(o)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(raw)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: "amd64",
		OS:           "linux",
		Created:      v1.Time{Time: epoch},
		Config: v1.Config{
			User:       fmt.Sprintf("%d:%d", Nonroot, Nonroot),
			Entrypoint: []string{"/cnpg-teleport"},
			WorkingDir: "/home/nonroot",
			Env: []string{
				"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
				"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
			},
		},
		RootFS: v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, err
	}
	return mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{
		Created: v1.Time{Time: epoch}, CreatedBy: "hack/image: distroless static nonroot content + /cnpg-teleport",
	}})
}

// WriteLayout writes img as a fresh OCI image layout at dir, tagged ref.
func WriteLayout(dir, ref string, img v1.Image) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	return p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref}))
}

// WriteTarball writes img as a docker-load tarball at path, tagged ref.
func WriteTarball(path, ref string, img v1.Image) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(path, tag, img)
}

func main() {
	bin := flag.String("binary", "bin/cnpg-teleport", "the static cnpg-teleport binary")
	ca := flag.String("ca-certificates", "/etc/ssl/certs/ca-certificates.crt", "CA bundle (Debian's ca-certificates)")
	dir := flag.String("layout", "bin/image", "OCI image layout directory to write (replaced)")
	tarPath := flag.String("tar", "bin/cnpg-teleport-image.tar", "docker/podman load tarball to write ('' for none)")
	ref := flag.String("tag", "cnpg-teleport:dev", "image reference in the tarball and the layout")
	flag.Parse()
	if err := run(*bin, *ca, *dir, *tarPath, *ref); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(bin, ca, dir, tarPath, ref string) error {
	var o Options
	var err error
	if o.Binary, err = os.ReadFile(bin); err != nil { //nolint:gosec // the binary named on the command line
		return err
	}
	if o.CACert, err = os.ReadFile(ca); err != nil { //nolint:gosec // the CA file named on the command line
		return fmt.Errorf("%w (install Debian's ca-certificates)", err)
	}
	img, err := Build(o)
	if err != nil {
		return err
	}
	if err := WriteLayout(dir, ref, img); err != nil {
		return err
	}
	if tarPath != "" {
		if err := WriteTarball(tarPath, ref, img); err != nil {
			return err
		}
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("%s %s\n", ref, d)
	return nil
}
