package world

import (
	"context"
	"crypto/tls"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Grace periods of the world's kubelet: a Pod's own terminationGracePeriod
// is honoured up to maxGrace (CNPG asks for 30 min; a test cannot wait that).
const (
	maxGrace     = 30 * time.Second
	probePeriod  = 500 * time.Millisecond
	restartDelay = time.Second
)

// podWorker runs one Pod (one UID) from binding to deletion.
type podWorker struct {
	k                     *Kubelet
	uid                   types.UID
	namespace, name       string
	notify, stop, stopped chan struct{}

	mu    sync.Mutex
	pod   *corev1.Pod // latest seen; nil once deleted from the apiserver
	sb    *sandbox
	hosts string

	// container state, by name (the worker goroutine only)
	start    metav1.Time
	status   map[string]*ctrState
	initDone bool
	finished bool // reached Succeeded or Failed: never run again
	reported *corev1.PodStatus
}

type ctrState struct {
	spec     corev1.Container
	init     bool
	proc     *Process
	started  metav1.Time
	restarts int32
	ready    bool
	fails    int
	last     *corev1.ContainerStateTerminated
	waiting  *corev1.ContainerStateWaiting
}

func newPodWorker(k *Kubelet, p *corev1.Pod) *podWorker {
	return &podWorker{
		k: k, uid: p.UID, namespace: p.Namespace, name: p.Name, pod: p,
		notify: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{}),
		status: map[string]*ctrState{},
	}
}

// update hands the worker the latest Pod (nil: deleted).
func (w *podWorker) update(p *corev1.Pod) {
	w.mu.Lock()
	w.pod = p
	w.mu.Unlock()
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

func (w *podWorker) current() *corev1.Pod {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pod
}

func (w *podWorker) setHosts(content string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sb == nil || content == w.hosts {
		return
	}
	if err := writeInPlace(w.sb.hosts, content); err == nil {
		w.hosts = content
	}
}

// shutdown stops the worker's containers for the world's Stop (the Pod is left as it is).
func (w *podWorker) shutdown() {
	close(w.stop)
	<-w.stopped
}

func (w *podWorker) logf(format string, args ...any) {
	w.k.logf("pod %s/%s: "+format, append([]any{w.namespace, w.name}, args...)...)
}

func (w *podWorker) run() {
	defer close(w.stopped)
	defer func() { w.k.workerDone(w.uid, w.finished) }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-w.stop:
			cancel()
		case <-w.stopped:
		}
	}()
	w.start = metav1.Now()
	if err := w.bind(ctx); err != nil {
		w.logf("bind: %v", err)
		return
	}
	sb := w.prepare(ctx)
	if sb == nil {
		return
	}
	defer func() {
		w.mu.Lock()
		w.sb = nil
		w.mu.Unlock()
		sb.teardown()
	}()
	w.mu.Lock()
	w.sb = sb
	w.mu.Unlock()
	w.k.nudge() // hosts file
	w.runContainers(ctx, sb)
}

// bind is the scheduler's part: an unscheduled Pod goes to the world's Node.
func (w *podWorker) bind(ctx context.Context) error {
	p := w.current()
	if p == nil || p.Spec.NodeName != "" {
		return nil
	}
	err := w.k.cs.CoreV1().Pods(w.namespace).Bind(ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Namespace: w.namespace, Name: w.name, UID: w.uid},
		Target:     corev1.ObjectReference{Kind: "Node", Name: NodeName},
	}, metav1.CreateOptions{})
	if apierrors.IsConflict(err) {
		return nil // bound meanwhile
	}
	return err
}

// prepare makes the sandbox, retrying (and saying why in the Pod's status)
// until it works or the Pod goes away.
func (w *podWorker) prepare(ctx context.Context) *sandbox {
	for {
		p := w.current()
		if p == nil || p.DeletionTimestamp != nil {
			if p != nil {
				w.finishDeletion(ctx)
			}
			return nil
		}
		sb, reason, err := w.newSandbox(ctx, p)
		if err == nil {
			return sb
		}
		w.logf("%s: %v", reason, err)
		for _, c := range slices.Concat(p.Spec.InitContainers, p.Spec.Containers) {
			w.state(c, false).waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: err.Error()}
		}
		w.report(ctx, p, sb)
		select {
		case <-ctx.Done():
			return nil
		case <-w.notify:
		case <-time.After(2 * time.Second):
		}
	}
}

func (w *podWorker) state(c corev1.Container, init bool) *ctrState {
	s, ok := w.status[c.Name]
	if !ok {
		s = &ctrState{spec: c, init: init}
		w.status[c.Name] = s
	}
	return s
}

var pgImage = regexp.MustCompile(`/postgresql:(\d+)`)

func (w *podWorker) newSandbox(ctx context.Context, p *corev1.Pod) (*sandbox, string, error) {
	controller := ""
	for _, c := range slices.Concat(p.Spec.InitContainers, p.Spec.Containers) {
		if _, err := imagePath(c.Image); err != nil {
			return nil, "ErrImagePull", err
		}
		if IsControllerImage(c.Image) && controller == "" {
			bin, err := ControllerBin()
			if err != nil {
				return nil, "ErrImagePull", fmt.Errorf("image %s: %w", c.Image, err)
			}
			controller = bin
		}
	}
	dirs, err := w.volumes(ctx, p)
	if err != nil {
		return nil, "CreateContainerConfigError", err
	}
	token, err := w.k.token(ctx, p)
	if err != nil {
		return nil, "CreateContainerConfigError", err
	}
	sb, err := newSandbox(ctx, p, sandboxParts{
		base: w.k.base, logDir: w.k.dir, manager: w.k.bins.manager, pgbouncer: w.k.bins.pgbouncer, controller: controller,
		volumeDirs: dirs, token: token, caCert: w.k.caCert, namespace: p.Namespace,
	})
	if err != nil {
		return nil, "CreateContainerError", err
	}
	return sb, "", nil
}

// ControllerImage is the repository of the controller's image (the chart's
// image.repository). The world runs it from the controller binary the
// Makefile builds (CNPG_TELEPORT_BIN), mounted at the image's entrypoint: the
// image's own content is what hack/image's tests check.
const ControllerImage = "ghcr.io/cnpg-teleport/cnpg-teleport"

// controllerEntrypoint is the controller image's entrypoint (hack/image).
const controllerEntrypoint = "/cnpg-teleport"

// IsControllerImage reports whether image (repository[:tag][@digest]) is the
// controller's image, whatever its tag or digest.
func IsControllerImage(image string) bool {
	repo, _, _ := strings.Cut(image, "@")
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i]
	}
	return repo == ControllerImage
}

// entrypoint is what a container runs: its command, else the image's
// entrypoint (the world knows one image's), then its args.
func entrypoint(c corev1.Container) []string {
	if len(c.Command) == 0 && IsControllerImage(c.Image) {
		return slices.Concat([]string{controllerEntrypoint}, c.Args)
	}
	return slices.Concat(c.Command, c.Args)
}

// imagePath is the PATH of an image. The world's images are the host: a
// CNPG PostgreSQL image must name a PostgreSQL major the host has.
func imagePath(image string) (string, error) {
	const sys = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	m := pgImage.FindStringSubmatch(image)
	if m == nil {
		return sys, nil
	}
	dir := "/usr/lib/postgresql/" + m[1] + "/bin"
	if _, err := os.Stat(filepath.Join(dir, "postgres")); err != nil {
		return "", fmt.Errorf("image %s: PostgreSQL %s is not on this machine (the world runs the host's PostgreSQL; use world.PostgresImage())", image, m[1])
	}
	return dir + ":" + sys, nil
}

// volumes returns a host directory for every volume a container mounts.
func (w *podWorker) volumes(ctx context.Context, p *corev1.Pod) (map[string]string, error) {
	used := map[string]bool{}
	for _, c := range slices.Concat(p.Spec.InitContainers, p.Spec.Containers) {
		for _, vm := range c.VolumeMounts {
			used[vm.Name] = true
		}
	}
	dirs := map[string]string{}
	for _, v := range p.Spec.Volumes {
		if !used[v.Name] {
			continue
		}
		dir := filepath.Join(w.k.dir, "volumes", fmt.Sprintf("%s_%s_%s", p.Namespace, p.Name, p.UID), v.Name)
		switch {
		case v.EmptyDir != nil:
		case v.PersistentVolumeClaim != nil:
			claim := v.PersistentVolumeClaim.ClaimName
			if _, err := w.k.cs.CoreV1().PersistentVolumeClaims(p.Namespace).Get(ctx, claim, metav1.GetOptions{}); err != nil {
				return nil, fmt.Errorf("volume %s: claim %s: %w", v.Name, claim, err)
			}
			dir = filepath.Join(w.k.pvcs, p.Namespace, claim)
		case v.Secret != nil:
			s, err := w.k.cs.CoreV1().Secrets(p.Namespace).Get(ctx, v.Secret.SecretName, metav1.GetOptions{})
			if err != nil {
				return nil, fmt.Errorf("volume %s: %w", v.Name, err)
			}
			if err := writeKeys(dir, s.Data, v.Secret.Items); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("volume %s: only emptyDir, persistentVolumeClaim and secret volumes are supported by the world's kubelet", v.Name)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		dirs[v.Name] = dir
	}
	return dirs, nil
}

func writeKeys(dir string, data map[string][]byte, items []corev1.KeyToPath) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	paths := map[string]string{}
	for k := range data {
		paths[k] = k
	}
	if len(items) > 0 {
		paths = map[string]string{}
		for _, it := range items {
			paths[it.Key] = it.Path
		}
	}
	for k, rel := range paths {
		dst := filepath.Join(dir, filepath.Clean("/"+rel))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, data[k], 0o644); err != nil { //nolint:gosec // read by the container's user, as a kubelet mounts it
			return err
		}
	}
	return nil
}

// runContainers runs the init containers in order, then the containers,
// restarting them as the Pod's restartPolicy says, until the Pod is deleted,
// reaches Succeeded or Failed, or the world stops.
func (w *podWorker) runContainers(ctx context.Context, sb *sandbox) {
	p := w.current()
	if p == nil {
		return
	}
	r := &containerRun{w: w, ctx: ctx, sb: sb, p: p, exited: make(chan string, 16)}
	for _, c := range p.Spec.InitContainers {
		r.order = append(r.order, w.state(c, true))
	}
	for _, c := range p.Spec.Containers {
		r.order = append(r.order, w.state(c, false))
	}
	r.startPhase()
	w.report(ctx, p, sb)
	probe := time.NewTicker(probePeriod)
	defer probe.Stop()
	for {
		select {
		case <-ctx.Done():
			w.terminate(r.order, 10*time.Second)
			return
		case <-w.notify:
			if r.deleted() {
				return
			}
		case name := <-r.exited:
			r.exit(name)
		case <-probe.C:
			if !r.probeAll() {
				continue
			}
		}
		if phase := w.report(ctx, r.p, sb); phase == corev1.PodSucceeded || phase == corev1.PodFailed {
			w.finished = true
			w.logf("%s", phase)
			return
		}
	}
}

// containerRun is the state of runContainers.
type containerRun struct {
	w      *podWorker
	ctx    context.Context
	sb     *sandbox
	p      *corev1.Pod
	order  []*ctrState // init containers, then containers
	next   int         // the next init container to run; past them, all containers run
	exited chan string
}

func (r *containerRun) startPhase() {
	if r.next < len(r.p.Spec.InitContainers) {
		r.launch(r.order[r.next])
		return
	}
	r.w.initDone = true
	for _, st := range r.order[len(r.p.Spec.InitContainers):] {
		r.launch(st)
	}
}

// launch starts a container, and reports on r.exited when it ends (or could not start).
func (r *containerRun) launch(st *ctrState) {
	st.waiting = nil
	report := func() {
		select {
		case r.exited <- st.spec.Name:
		case <-r.w.stopped:
		}
	}
	if err := r.w.launch(r.ctx, r.p, r.sb, st); err != nil {
		r.w.logf("container %s: %v", st.spec.Name, err)
		st.waiting = &corev1.ContainerStateWaiting{Reason: "CreateContainerError", Message: err.Error()}
		go func() {
			time.Sleep(restartDelay)
			report()
		}()
		return
	}
	go func() {
		<-st.proc.Done()
		report()
	}()
}

// deleted handles a new version of the Pod; true when the worker is done.
func (r *containerRun) deleted() bool {
	cur := r.w.current()
	if cur == nil {
		r.w.terminate(r.order, time.Second)
		return true
	}
	if cur.DeletionTimestamp == nil {
		r.p = cur
		return false
	}
	grace := maxGrace
	if g := cur.DeletionGracePeriodSeconds; g != nil && time.Duration(*g)*time.Second < grace {
		grace = time.Duration(*g) * time.Second
	}
	r.w.logf("deleted: stopping containers (grace %s)", grace)
	r.w.terminate(r.order, grace)
	r.w.finishDeletion(r.ctx)
	return true
}

// exit handles a container that ended, as the restartPolicy says.
func (r *containerRun) exit(name string) {
	st := r.w.status[name]
	if st.proc != nil {
		st.last = terminated(st)
		st.ready, st.fails = false, 0
		r.w.logf("container %s exited: %s (%d)", name, st.last.Reason, st.last.ExitCode)
	}
	failed := st.last == nil || st.last.ExitCode != 0
	policy := r.p.Spec.RestartPolicy
	switch {
	case st.init && !failed:
		r.next++
		r.startPhase()
	case policy == corev1.RestartPolicyAlways || (failed && policy == corev1.RestartPolicyOnFailure):
		st.restarts++
		time.Sleep(restartDelay)
		r.launch(st)
	default:
		// Done: Succeeded, or Failed (the status says which).
	}
}

// probeAll probes every running container; true when a readiness changed.
func (r *containerRun) probeAll() bool {
	changed := false
	for _, st := range r.order {
		if st.init || st.proc == nil {
			continue
		}
		if ok, _ := st.proc.Exited(); ok {
			continue
		}
		if ready := r.w.probe(r.sb, st); ready != st.ready {
			st.ready, changed = ready, true
		}
	}
	return changed
}

// launch starts one container process in the sandbox.
func (w *podWorker) launch(ctx context.Context, p *corev1.Pod, sb *sandbox, st *ctrState) error {
	c := st.spec
	path, err := imagePath(c.Image)
	if err != nil {
		return err
	}
	env, err := w.env(ctx, p, sb, c, path)
	if err != nil {
		return err
	}
	vars := map[string]string{}
	for _, e := range env {
		k, v, _ := strings.Cut(e, "=")
		vars[k] = v
	}
	argv := expand(entrypoint(c), vars)
	if len(argv) == 0 {
		return fmt.Errorf("container %s has no command (the world has no image entrypoints)", c.Name)
	}
	logName := fmt.Sprintf("%s_%s_%s", p.Namespace, p.Name, c.Name)
	if st.proc, err = startProcess(w.k.dir, logName, env, sb.command(c.WorkingDir, argv)); err != nil {
		return err
	}
	w.k.addLog(st.proc.LogPath)
	st.started = metav1.Now()
	return nil
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expand replaces $(VAR) with the container's environment, as a kubelet does.
func expand(argv []string, vars map[string]string) []string {
	out := make([]string, len(argv))
	for i, a := range argv {
		out[i] = varRef.ReplaceAllStringFunc(a, func(m string) string {
			if v, ok := vars[m[2:len(m)-1]]; ok {
				return v
			}
			return m
		})
	}
	return out
}

// env is the container's environment: the image's, the Service variables,
// then the container's own env and envFrom, resolved like a kubelet does.
func (w *podWorker) env(ctx context.Context, p *corev1.Pod, sb *sandbox, c corev1.Container, path string) ([]string, error) {
	host, port, _ := net.SplitHostPort(w.k.apiHost)
	env := []string{"PATH=" + path, "HOSTNAME=" + p.Name, "HOME=/var/lib/postgresql",
		"KUBERNETES_SERVICE_HOST=" + host, "KUBERNETES_SERVICE_PORT=" + port, "KUBERNETES_SERVICE_PORT_HTTPS=" + port}
	env = append(env, w.k.env...)
	for _, from := range c.EnvFrom {
		data, err := w.envSource(ctx, from)
		if err != nil {
			return nil, err
		}
		for k, v := range data {
			env = append(env, from.Prefix+k+"="+v)
		}
	}
	for _, e := range c.Env {
		v, ok, err := w.envValue(ctx, p, sb, e)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		if ok {
			env = append(env, e.Name+"="+v)
		}
	}
	return env, nil
}

func (w *podWorker) envSource(ctx context.Context, from corev1.EnvFromSource) (map[string]string, error) {
	out := map[string]string{}
	switch {
	case from.SecretRef != nil:
		s, err := w.k.cs.CoreV1().Secrets(w.namespace).Get(ctx, from.SecretRef.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) && from.SecretRef.Optional != nil && *from.SecretRef.Optional {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		for k, v := range s.Data {
			out[k] = string(v)
		}
	case from.ConfigMapRef != nil:
		cm, err := w.k.cs.CoreV1().ConfigMaps(w.namespace).Get(ctx, from.ConfigMapRef.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) && from.ConfigMapRef.Optional != nil && *from.ConfigMapRef.Optional {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		maps.Copy(out, cm.Data)
	}
	return out, nil
}

func (w *podWorker) envValue(ctx context.Context, p *corev1.Pod, sb *sandbox, e corev1.EnvVar) (string, bool, error) {
	src := e.ValueFrom
	switch {
	case src == nil:
		return e.Value, true, nil
	case src.SecretKeyRef != nil:
		r := src.SecretKeyRef
		s, err := w.k.cs.CoreV1().Secrets(w.namespace).Get(ctx, r.Name, metav1.GetOptions{})
		if err != nil || s.Data[r.Key] == nil {
			if r.Optional != nil && *r.Optional {
				return "", false, nil
			}
			return "", false, fmt.Errorf("secret %s key %s: %w", r.Name, r.Key, err)
		}
		return string(s.Data[r.Key]), true, nil
	case src.ConfigMapKeyRef != nil:
		r := src.ConfigMapKeyRef
		cm, err := w.k.cs.CoreV1().ConfigMaps(w.namespace).Get(ctx, r.Name, metav1.GetOptions{})
		if err != nil {
			if r.Optional != nil && *r.Optional {
				return "", false, nil
			}
			return "", false, err
		}
		v, ok := cm.Data[r.Key]
		return v, ok, nil
	case src.FieldRef != nil:
		switch f := src.FieldRef.FieldPath; {
		case f == "metadata.name":
			return p.Name, true, nil
		case f == "metadata.namespace":
			return p.Namespace, true, nil
		case f == "metadata.uid":
			return string(p.UID), true, nil
		case f == "spec.nodeName":
			return NodeName, true, nil
		case f == "spec.serviceAccountName":
			return p.Spec.ServiceAccountName, true, nil
		case f == "status.podIP":
			return sb.ip, true, nil
		case f == "status.hostIP":
			return WorldAddr, true, nil
		case strings.HasPrefix(f, "metadata.labels['"):
			return p.Labels[strings.TrimSuffix(strings.TrimPrefix(f, "metadata.labels['"), "']")], true, nil
		case strings.HasPrefix(f, "metadata.annotations['"):
			return p.Annotations[strings.TrimSuffix(strings.TrimPrefix(f, "metadata.annotations['"), "']")], true, nil
		default:
			return "", false, fmt.Errorf("fieldRef %s is not supported by the world's kubelet", f)
		}
	case src.ResourceFieldRef != nil:
		return "0", true, nil
	}
	return "", false, fmt.Errorf("unsupported valueFrom")
}

// probe runs the container's readiness probe once. Like a kubelet it does not
// verify an HTTPS probe's certificate, and needs failureThreshold failures in
// a row to turn a ready container unready.
func (w *podWorker) probe(sb *sandbox, st *ctrState) bool {
	pr := st.spec.ReadinessProbe
	if pr == nil {
		return true
	}
	port := func(p intstr.IntOrString) string {
		if p.Type == intstr.Int {
			return strconv.Itoa(p.IntValue())
		}
		for _, cp := range st.spec.Ports {
			if cp.Name == p.StrVal {
				return strconv.Itoa(int(cp.ContainerPort))
			}
		}
		return p.StrVal
	}
	ok := false
	switch {
	case pr.HTTPGet != nil:
		scheme := "http"
		if pr.HTTPGet.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // a kubelet's HTTPS probe does not verify
		}}
		resp, err := hc.Get(scheme + "://" + net.JoinHostPort(sb.ip, port(pr.HTTPGet.Port)) + pr.HTTPGet.Path) //nolint:noctx // bounded by the client timeout
		if err == nil {
			ok = resp.StatusCode >= 200 && resp.StatusCode < 400
			_ = resp.Body.Close()
		}
		hc.CloseIdleConnections()
	case pr.TCPSocket != nil:
		c, err := net.DialTimeout("tcp", net.JoinHostPort(sb.ip, port(pr.TCPSocket.Port)), 2*time.Second)
		if err == nil {
			ok = true
			_ = c.Close()
		}
	}
	if ok {
		st.fails = 0
		return true
	}
	st.fails++
	threshold := int(pr.FailureThreshold)
	if threshold < 1 {
		threshold = 3
	}
	return st.ready && st.fails < threshold
}

func terminated(st *ctrState) *corev1.ContainerStateTerminated {
	t := &corev1.ContainerStateTerminated{StartedAt: st.started, FinishedAt: metav1.Now(), Reason: "Completed"}
	if _, err := st.proc.Exited(); err != nil {
		t.ExitCode, t.Reason = 1, "Error"
		if ee, ok := err.(interface{ ExitCode() int }); ok && ee.ExitCode() > 0 {
			t.ExitCode = int32(ee.ExitCode()) //nolint:gosec // an exit code
		}
	}
	return t
}

// terminate stops every running container: SIGTERM, SIGKILL after grace.
func (w *podWorker) terminate(order []*ctrState, grace time.Duration) {
	var wg sync.WaitGroup
	for _, st := range order {
		if st.proc == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			st.proc.StopWithin(grace)
		}()
	}
	wg.Wait()
}

// finishDeletion deletes the Pod for good once its containers have stopped.
func (w *podWorker) finishDeletion(ctx context.Context) {
	zero := int64(0)
	uid := w.uid
	err := w.k.cs.CoreV1().Pods(w.namespace).Delete(ctx, w.name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &uid},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		w.logf("finish deletion: %v", err)
	}
}

// report writes the Pod's status when it changed, and returns its phase.
func (w *podWorker) report(ctx context.Context, p *corev1.Pod, sb *sandbox) corev1.PodPhase {
	st := w.podStatus(p, sb)
	if w.reported != nil && statusEqual(*w.reported, st) {
		return st.Phase
	}
	for range 5 {
		cur, err := w.k.cs.CoreV1().Pods(w.namespace).Get(ctx, w.name, metav1.GetOptions{})
		if err != nil || cur.UID != w.uid {
			return st.Phase
		}
		cur.Status = st
		if _, err = w.k.cs.CoreV1().Pods(w.namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err == nil {
			w.reported = &st
			return st.Phase
		} else if !apierrors.IsConflict(err) {
			w.logf("status: %v", err)
			return st.Phase
		}
	}
	return st.Phase
}

func statusEqual(a, b corev1.PodStatus) bool {
	strip := func(s corev1.PodStatus) string {
		for i := range s.Conditions {
			s.Conditions[i].LastTransitionTime = metav1.Time{}
		}
		return fmt.Sprintf("%v|%v|%v|%v|%v", s.Phase, s.Conditions, s.PodIP, s.ContainerStatuses, s.InitContainerStatuses)
	}
	return strip(*a.DeepCopy()) == strip(*b.DeepCopy())
}

// podStatus is what a kubelet reports for the worker's state.
func (w *podWorker) podStatus(p *corev1.Pod, sb *sandbox) corev1.PodStatus {
	// The apiserver sets the QoS class at creation from the containers'
	// resources, and it is immutable: report it as it is.
	qos := p.Status.QOSClass
	if qos == "" {
		qos = corev1.PodQOSBestEffort
	}
	st := corev1.PodStatus{Phase: corev1.PodPending, HostIP: WorldAddr, HostIPs: []corev1.HostIP{{IP: WorldAddr}}, StartTime: &w.start,
		QOSClass: qos}
	if sb != nil && sb.ip != "" {
		st.PodIP, st.PodIPs = sb.ip, []corev1.PodIP{{IP: sb.ip}}
	}
	for _, c := range p.Spec.InitContainers {
		st.InitContainerStatuses = append(st.InitContainerStatuses, w.state(c, true).status())
	}
	for _, c := range p.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, w.state(c, false).status())
	}
	st.Phase = podPhase(p.Spec.RestartPolicy, w.initDone, st.InitContainerStatuses, st.ContainerStatuses)
	allReady := true
	for _, c := range st.ContainerStatuses {
		allReady = allReady && c.Ready
	}
	ready := allReady && w.initDone && st.Phase == corev1.PodRunning
	cond := func(t corev1.PodConditionType, ok bool) corev1.PodCondition {
		c := corev1.PodCondition{Type: t, Status: corev1.ConditionFalse, LastTransitionTime: metav1.Now()}
		if ok {
			c.Status = corev1.ConditionTrue
		}
		for _, old := range p.Status.Conditions {
			if old.Type == t && old.Status == c.Status {
				c.LastTransitionTime = old.LastTransitionTime
			}
		}
		return c
	}
	st.Conditions = []corev1.PodCondition{
		cond(corev1.PodReadyToStartContainers, sb != nil),
		cond(corev1.PodInitialized, w.initDone),
		cond(corev1.ContainersReady, ready),
		cond(corev1.PodReady, ready),
		cond(corev1.PodScheduled, true),
	}
	return st
}

// podPhase follows the kubelet: Failed when a container failed for good,
// Succeeded when every container ended well and none is restarted, Running
// while a container runs (or is restarted), Pending before.
func podPhase(policy corev1.RestartPolicy, initDone bool, inits, ctrs []corev1.ContainerStatus) corev1.PodPhase {
	failed := func(c corev1.ContainerStatus) bool {
		return c.State.Terminated != nil && c.State.Terminated.ExitCode != 0
	}
	initFailed := false
	for _, c := range inits {
		initFailed = initFailed || (failed(c) && policy == corev1.RestartPolicyNever)
	}
	anyRunning, allDone, anyFailed := false, true, false
	for _, c := range ctrs {
		anyRunning = anyRunning || c.State.Running != nil
		allDone = allDone && c.State.Terminated != nil
		anyFailed = anyFailed || failed(c)
	}
	switch {
	case initFailed || (anyFailed && allDone && policy == corev1.RestartPolicyNever):
		return corev1.PodFailed
	case allDone && initDone && policy != corev1.RestartPolicyAlways:
		return corev1.PodSucceeded
	case anyRunning || (initDone && policy == corev1.RestartPolicyAlways):
		return corev1.PodRunning
	}
	return corev1.PodPending
}

// status is the container's status as a kubelet reports it.
func (s *ctrState) status() corev1.ContainerStatus {
	out := corev1.ContainerStatus{Name: s.spec.Name, Image: s.spec.Image, ImageID: s.spec.Image, RestartCount: s.restarts, Ready: s.ready}
	running := s.proc != nil
	if running {
		if ok, _ := s.proc.Exited(); ok {
			running = false
		}
	}
	switch {
	case s.waiting != nil:
		out.State.Waiting = s.waiting
	case running:
		out.State.Running = &corev1.ContainerStateRunning{StartedAt: s.started}
		out.Started = &running
	case s.last != nil:
		out.State.Terminated = s.last
	default:
		out.State.Waiting = &corev1.ContainerStateWaiting{Reason: "PodInitializing"}
	}
	if s.last != nil && (running || s.waiting != nil) {
		out.LastTerminationState.Terminated = s.last
	}
	return out
}
