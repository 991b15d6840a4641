package world

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// A sandbox is what a container runtime gives one Pod: a root filesystem, a
// network namespace with its own address, and the Pod's volumes. Containers
// run in it as the host's `postgres` account in a nested user namespace,
// chrooted into the root, so CloudNativePG finds the paths its images have
// (/controller, /run, /var/lib/postgresql/data, the service-account token).
//
// The "image" is the host: /usr is an overlay of the host's /usr (writes land
// in the sandbox; /usr/bin/pgbouncer is the world's PgBouncer, where CNPG's
// image has it), /etc a read-only bind of the host's with the Pod's own hosts
// file. The root itself is a tmpfs, so detaching it removes every mount under
// it at once and nothing on the host is ever reached through it.
type sandbox struct {
	dir    string // the sandbox's own directory (not under any test's TempDir)
	root   string // dir/root, a tmpfs
	hosts  string // dir/hosts, bind-mounted at /etc/hosts
	ip     string
	veth   string
	netns  *Process // holds the network namespace
	logDir string
	ids    [2]int // uid, gid of the host's postgres account
}

// sandboxParts are what newSandbox needs from the kubelet.
type sandboxParts struct {
	base       string // parent directory of sandboxes
	logDir     string
	manager    string // CNPG's manager binary, at /manager (the operator image's path)
	pgbouncer  string // PgBouncer binary, at /usr/bin/pgbouncer
	controller string // the controller binary at its image's entrypoint ("": the Pod does not run it)
	volumeDirs map[string]string
	token      []byte // service-account token (nil: none mounted)
	caCert     []byte
	namespace  string
}

var podIPs atomic.Int32

// nextPodIP hands out 10.0.X.Y addresses, never twice in a process.
func nextPodIP() (ip, veth string) {
	n := int(podIPs.Add(1))
	return fmt.Sprintf("10.0.%d.%d", n/250, n%250+1), fmt.Sprintf("vw%d", n)
}

func newSandbox(ctx context.Context, pod *corev1.Pod, parts sandboxParts) (_ *sandbox, err error) {
	uid, gid, err := postgresAccount()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(parts.base, pod.Namespace+"_"+pod.Name+"_")
	if err != nil {
		return nil, err
	}
	s := &sandbox{dir: dir, root: filepath.Join(dir, "root"), hosts: filepath.Join(dir, "hosts"), logDir: parts.logDir, ids: [2]int{uid, gid}}
	defer func() {
		if err != nil {
			s.teardown()
		}
	}()
	if err := s.mountRoot(pod, parts); err != nil {
		return nil, fmt.Errorf("sandbox root: %w", err)
	}
	if err := s.network(ctx, pod); err != nil {
		return nil, fmt.Errorf("sandbox network: %w", err)
	}
	return s, nil
}

// postgresAccount is the host's postgres account: PostgreSQL refuses to run
// as root, and CNPG's peer authentication expects the OS user `postgres`.
func postgresAccount() (uid, gid int, err error) {
	f, err := os.Open("/etc/passwd")
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) > 3 && fields[0] == "postgres" {
			uid, _ = strconv.Atoi(fields[2])
			gid, _ = strconv.Atoi(fields[3])
			return uid, gid, nil
		}
	}
	return 0, 0, errors.New("no 'postgres' account on this machine (make deps installs postgresql)")
}

func mount(src, dst, fstype string, flags uintptr, data string) error {
	if err := syscall.Mount(src, dst, fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s on %s: %w", src, dst, err)
	}
	return nil
}

// bindFile bind-mounts a file onto a new empty file at dst.
func bindFile(src, dst string, readOnly bool) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(dst, nil, 0o644); err != nil { //nolint:gosec // a mount point
		return err
	}
	return bind(src, dst, readOnly)
}

func bind(src, dst string, readOnly bool) error {
	if err := mount(src, dst, "", syscall.MS_BIND, ""); err != nil {
		return err
	}
	if readOnly {
		return mount("", dst, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY|syscall.MS_NOSUID|syscall.MS_NODEV, "")
	}
	return nil
}

func (s *sandbox) mountRoot(pod *corev1.Pod, parts sandboxParts) error {
	r := s.root
	if err := os.MkdirAll(r, 0o755); err != nil {
		return err
	}
	if err := mount("tmpfs", r, "tmpfs", syscall.MS_NOSUID, "mode=0755,size=64m"); err != nil {
		return err
	}
	for _, d := range []string{"usr", "etc", "dev", "proc", "tmp", "run", "controller", "var/run/secrets/kubernetes.io/serviceaccount"} {
		if err := os.MkdirAll(filepath.Join(r, d), 0o755); err != nil {
			return err
		}
	}
	for _, l := range [][2]string{{"usr/bin", "bin"}, {"usr/lib", "lib"}, {"usr/lib64", "lib64"}, {"usr/sbin", "sbin"}} {
		if err := os.Symlink(l[0], filepath.Join(r, l[1])); err != nil {
			return err
		}
	}
	for _, step := range []func() error{
		func() error { return s.mountImage(parts) },
		s.mountDev,
		func() error { return s.mountScratch(parts) },
		func() error { return s.mountVolumes(pod, parts.volumeDirs) },
		func() error { return s.mountServiceAccount(parts) },
	} {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// mountImage mounts the "image": the host's /usr (overlay, with the world's
// PgBouncer at CNPG's path) and /etc (read-only, with the Pod's hosts file).
func (s *sandbox) mountImage(parts sandboxParts) error {
	upper, work := filepath.Join(s.dir, "usr-upper"), filepath.Join(s.dir, "usr-work")
	for _, d := range []string{filepath.Join(upper, "bin"), work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := copyFile(parts.pgbouncer, filepath.Join(upper, "bin", "pgbouncer")); err != nil {
		return err
	}
	if err := mount("overlay", filepath.Join(s.root, "usr"), "overlay", 0, "lowerdir=/usr,upperdir="+upper+",workdir="+work); err != nil {
		return err
	}
	if err := bind("/etc", filepath.Join(s.root, "etc"), true); err != nil {
		return err
	}
	if err := os.WriteFile(s.hosts, []byte(hostsHeader), 0o644); err != nil { //nolint:gosec // a hosts file
		return err
	}
	return bind(s.hosts, filepath.Join(s.root, "etc", "hosts"), true)
}

// mountDev gives the sandbox the few device nodes a container has.
func (s *sandbox) mountDev() error {
	for _, dev := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		if err := bindFile("/dev/"+dev, filepath.Join(s.root, "dev", dev), false); err != nil {
			return err
		}
	}
	for _, l := range [][2]string{{"/proc/self/fd", "dev/fd"}, {"/proc/self/fd/0", "dev/stdin"}, {"/proc/self/fd/1", "dev/stdout"}, {"/proc/self/fd/2", "dev/stderr"}} {
		if err := os.Symlink(l[0], filepath.Join(s.root, l[1])); err != nil {
			return err
		}
	}
	return nil
}

// mountScratch mounts /proc, a private /tmp, CNPG's manager at /manager
// (where the operator image has it, for the bootstrap-controller init
// container) and, for a Pod of the controller's image, its binary.
func (s *sandbox) mountScratch(parts sandboxParts) error {
	if err := mount("/proc", filepath.Join(s.root, "proc"), "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		return err
	}
	tmp := filepath.Join(s.dir, "tmp")
	if err := os.MkdirAll(tmp, 0o750); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o777|os.ModeSticky); err != nil {
		return err
	}
	if err := bind(tmp, filepath.Join(s.root, "tmp"), false); err != nil {
		return err
	}
	if parts.controller != "" {
		if err := bindFile(parts.controller, filepath.Join(s.root, controllerEntrypoint), true); err != nil {
			return err
		}
	}
	return bindFile(parts.manager, filepath.Join(s.root, "manager"), true)
}

// mountServiceAccount mounts the Pod's service-account token where
// rest.InClusterConfig reads it.
func (s *sandbox) mountServiceAccount(parts sandboxParts) error {
	if parts.token == nil {
		return nil
	}
	sa := filepath.Join(s.dir, "serviceaccount")
	if err := os.MkdirAll(sa, 0o755); err != nil {
		return err
	}
	for name, data := range map[string][]byte{"token": parts.token, "ca.crt": parts.caCert, "namespace": []byte(parts.namespace)} {
		if err := os.WriteFile(filepath.Join(sa, name), data, 0o644); err != nil { //nolint:gosec // read by the container's user
			return err
		}
	}
	return bind(sa, filepath.Join(s.root, "var/run/secrets/kubernetes.io/serviceaccount"), true)
}

// mountVolumes mounts the volumes every container of the Pod asks for
// (the union: one root serves all containers), shallowest path first.
func (s *sandbox) mountVolumes(pod *corev1.Pod, dirs map[string]string) error {
	type m struct {
		path, src string
		ro        bool
	}
	var mounts []m
	seen := map[string]string{}
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		for _, vm := range c.VolumeMounts {
			if vm.SubPath != "" || vm.SubPathExpr != "" {
				return fmt.Errorf("container %s: subPath mounts are not supported by the world's kubelet", c.Name)
			}
			if prev, ok := seen[vm.MountPath]; ok {
				if prev != vm.Name {
					return fmt.Errorf("%s is mounted from volumes %s and %s", vm.MountPath, prev, vm.Name)
				}
				continue
			}
			src, ok := dirs[vm.Name]
			if !ok {
				return fmt.Errorf("container %s: volume %s has no source", c.Name, vm.Name)
			}
			seen[vm.MountPath] = vm.Name
			mounts = append(mounts, m{vm.MountPath, src, vm.ReadOnly})
		}
	}
	slices.SortStableFunc(mounts, func(a, b m) int { return strings.Count(a.path, "/") - strings.Count(b.path, "/") })
	for _, v := range mounts {
		dst := filepath.Join(s.root, v.path)
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
		if err := bind(v.src, dst, v.ro); err != nil {
			return err
		}
	}
	return nil
}

// network gives the sandbox its own network namespace, joined to the world's
// by a veth pair: the Pod's address inside, a /32 route to it outside.
func (s *sandbox) network(ctx context.Context, pod *corev1.Pod) error {
	s.ip, s.veth = nextPodIP()
	var err error
	s.netns, err = startProcess(s.logDir, pod.Namespace+"_"+pod.Name+"_netns", []string{"PATH=/usr/bin:/bin"}, []string{"unshare", "-n", "sleep", "infinity"})
	if err != nil {
		return err
	}
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return err
	}
	pid := strconv.Itoa(s.netns.PID())
	if err := waitFor(10*time.Second, 5*time.Millisecond, func() error {
		ns, err := os.Readlink("/proc/" + pid + "/ns/net")
		if err != nil || ns == self {
			return fmt.Errorf("network namespace of %s not there yet", pid)
		}
		return nil
	}); err != nil {
		return err
	}
	in := func(args ...string) []string { return append([]string{"nsenter", "-t", pid, "-n", "--"}, args...) }
	for _, argv := range [][]string{
		{"ip", "link", "add", s.veth, "type", "veth", "peer", "name", "eth0", "netns", pid},
		{"ip", "link", "set", s.veth, "up"},
		{"ip", "route", "add", s.ip + "/32", "dev", s.veth, "src", WorldAddr},
		in("ip", "link", "set", "lo", "up"),
		in("ip", "addr", "add", s.ip+"/32", "dev", "eth0"),
		in("ip", "link", "set", "eth0", "up"),
		in("ip", "route", "add", WorldAddr, "dev", "eth0"),
		in("ip", "route", "add", "default", "via", WorldAddr),
	} {
		if out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, out)
		}
	}
	return nil
}

// command returns the argv that runs argv as a container of the sandbox.
func (s *sandbox) command(workDir string, argv []string) []string {
	if workDir == "" {
		workDir = "/"
	}
	return append([]string{"nsenter", "-t", strconv.Itoa(s.netns.PID()), "-n", "--",
		"unshare", "-U", "--map-user=" + strconv.Itoa(s.ids[0]), "--map-group=" + strconv.Itoa(s.ids[1]),
		"-R", s.root, "-w", workDir, "--"}, argv...)
}

// teardown stops the network namespace, detaches the root (and with it every
// mount under it) and removes the sandbox directory, but only once no mount
// is left under it: a directory is never removed through a mount.
func (s *sandbox) teardown() {
	if s.netns != nil {
		s.netns.StopWithin(time.Second)
		if s.veth != "" {
			_ = exec.Command("ip", "link", "del", s.veth).Run() // gone with the namespace, normally
		}
	}
	if err := syscall.Unmount(s.root, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
		fmt.Fprintf(os.Stderr, "world: sandbox %s: detach root: %v (left in place)\n", s.dir, err)
		return
	}
	if under := mountsUnder(s.dir); len(under) > 0 {
		fmt.Fprintf(os.Stderr, "world: sandbox %s: still mounted %v (left in place)\n", s.dir, under)
		return
	}
	_ = os.RemoveAll(s.dir)
}

// mountsUnder lists the mount points at or below dir in this mount namespace.
func mountsUnder(dir string) []string {
	raw, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return []string{"(mountinfo: " + err.Error() + ")"}
	}
	var out []string
	for _, l := range strings.Split(string(raw), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			out = append(out, f[4])
		}
	}
	return out
}

func copyFile(src, dst string) error {
	raw, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, raw, 0o755) //nolint:gosec // an executable
}
