package world

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// NodeName is the world's one Node; the kubelet binds every unscheduled Pod to it.
const NodeName = "world"

// Kubelet is the world's stand-in for a node: it binds Pods to its Node (the
// scheduler's part), runs their containers in sandboxes (see sandbox), reports
// their status and readiness from their probes, restarts containers as their
// restartPolicy says, finishes graceful deletion, and keeps every Service
// name resolving to a ready Pod behind it (DNS and kube-proxy's part). It
// tracks every process it starts and stops them all in Stop.
type Kubelet struct {
	cs      kubernetes.Interface
	caCert  []byte
	apiHost string // host:port the Pods reach the apiserver on
	dir     string // logs
	base    string // sandboxes
	pvcs    string // PersistentVolumeClaim contents, by namespace/name
	bins    sandboxBins
	env     []string // added to every container: the world's marker

	pods     corelisters.PodLister
	services corelisters.ServiceLister
	stopInf  chan struct{}
	kick     chan struct{}
	done     chan struct{}

	mu       sync.Mutex
	logs     []string // container logs, in start order
	deleting map[types.UID]bool
	workers  map[types.UID]*podWorker
	finished map[types.UID]bool // Pods whose containers all ended: never started again
	stopped  bool
	hosts    string // last hosts file written
}

type sandboxBins struct{ manager, pgbouncer string }

// startKubelet starts the kubelet against the apiserver in cfg.
func startKubelet(cfg *rest.Config, dir string, bins sandboxBins, marker string) (*Kubelet, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	base, err := os.MkdirTemp("", "world-sandboxes")
	if err != nil {
		return nil, err
	}
	host := strings.TrimPrefix(strings.TrimPrefix(cfg.Host, "https://"), "http://")
	k := &Kubelet{
		cs: cs, caCert: cfg.CAData, apiHost: strings.TrimSuffix(host, "/"), dir: dir, base: base,
		pvcs: filepath.Join(dir, "pvcs"), bins: bins, env: []string{marker},
		stopInf: make(chan struct{}), kick: make(chan struct{}, 1), done: make(chan struct{}),
		workers: map[types.UID]*podWorker{}, finished: map[types.UID]bool{}, deleting: map[types.UID]bool{},
	}
	ctx := context.Background()
	if err := k.registerNode(ctx); err != nil {
		return nil, err
	}
	f := informers.NewSharedInformerFactory(cs, 0)
	podInf, svcInf := f.Core().V1().Pods(), f.Core().V1().Services()
	k.pods, k.services = podInf.Lister(), svcInf.Lister()
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { k.nudge() },
		UpdateFunc: func(any, any) { k.nudge() },
		DeleteFunc: func(any) { k.nudge() },
	}
	for _, inf := range []cache.SharedIndexInformer{podInf.Informer(), svcInf.Informer()} {
		if _, err := inf.AddEventHandler(h); err != nil {
			return nil, err
		}
	}
	f.Start(k.stopInf)
	for typ, ok := range f.WaitForCacheSync(k.stopInf) {
		if !ok {
			return nil, fmt.Errorf("kubelet: %v cache did not sync", typ)
		}
	}
	go k.loop()
	return k, nil
}

func (k *Kubelet) registerNode(ctx context.Context) error {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: NodeName, Labels: map[string]string{
		"kubernetes.io/hostname": NodeName, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
	}}}
	created, err := k.cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("kubelet: register node: %w", err)
	}
	now := metav1.Now()
	created.Status = corev1.NodeStatus{
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			LastHeartbeatTime: now, LastTransitionTime: now}},
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: WorldAddr}, {Type: corev1.NodeHostName, Address: NodeName}},
	}
	_, err = k.cs.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
	return err
}

func (k *Kubelet) nudge() {
	select {
	case k.kick <- struct{}{}:
	default:
	}
}

// loop syncs on every Pod or Service event, and every second (probes and
// restarts report through the workers; this catches anything missed).
func (k *Kubelet) loop() {
	defer close(k.done)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-k.stopInf:
			return
		case <-k.kick:
		case <-tick.C:
		}
		k.sync()
	}
}

func (k *Kubelet) sync() {
	pods, err := k.pods.List(labels.Everything())
	if err != nil {
		return
	}
	k.mu.Lock()
	if k.stopped {
		k.mu.Unlock()
		return
	}
	live := map[types.UID]bool{}
	for _, p := range pods {
		if p.Spec.NodeName != "" && p.Spec.NodeName != NodeName {
			continue
		}
		live[p.UID] = true
		w, ok := k.workers[p.UID]
		if !ok {
			if k.finished[p.UID] || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
				if p.DeletionTimestamp != nil && len(p.Finalizers) == 0 && !k.deleting[p.UID] {
					k.deleting[p.UID] = true
					go k.forget(p)
				}
				continue
			}
			w = newPodWorker(k, p)
			k.workers[p.UID] = w
			go w.run()
		}
		w.update(p)
	}
	for uid, w := range k.workers {
		if !live[uid] {
			w.update(nil) // deleted outright
		}
	}
	for uid := range k.finished {
		if !live[uid] {
			delete(k.finished, uid)
			delete(k.deleting, uid)
		}
	}
	k.mu.Unlock()
	k.syncHosts(pods)
}

// forget finishes the deletion of a Pod whose containers have all ended.
func (k *Kubelet) forget(p *corev1.Pod) {
	zero := int64(0)
	err := k.cs.CoreV1().Pods(p.Namespace).Delete(context.Background(), p.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &p.UID},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		k.logf("pod %s/%s: finish deletion: %v", p.Namespace, p.Name, err)
	}
}

// addLog records a container log (once).
func (k *Kubelet) addLog(path string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !slices.Contains(k.logs, path) {
		k.logs = append(k.logs, path)
	}
}

func (k *Kubelet) containerLogs() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.logs)
}

func (k *Kubelet) workerDone(uid types.UID, finished bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.workers, uid)
	if finished {
		k.finished[uid] = true
	}
}

// token mints the Pod's service-account token with the TokenRequest API,
// bound to the Pod, as a kubelet does.
func (k *Kubelet) token(ctx context.Context, p *corev1.Pod) ([]byte, error) {
	if p.Spec.AutomountServiceAccountToken != nil && !*p.Spec.AutomountServiceAccountToken {
		return nil, nil
	}
	sa := p.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	exp := int64(24 * 3600)
	tr, err := k.cs.CoreV1().ServiceAccounts(p.Namespace).CreateToken(ctx, sa, &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{
		ExpirationSeconds: &exp,
		BoundObjectRef:    &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("token for service account %s: %w", sa, err)
	}
	return []byte(tr.Status.Token), nil
}

// syncHosts points every Service name at a ready Pod behind it: fully
// qualified names in the world's hosts file, and in each sandbox's also the
// short names of its own namespace (the search domain).
func (k *Kubelet) syncHosts(pods []*corev1.Pod) {
	svcs, err := k.services.List(labels.Everything())
	if err != nil {
		return
	}
	entries := serviceEntries(svcs, pods)
	world := renderHosts(entries, "")
	k.mu.Lock()
	defer k.mu.Unlock()
	if world != k.hosts && hostsPath != "" {
		if err := writeInPlace(hostsPath, world); err != nil {
			k.logf("hosts: %v", err)
		} else {
			k.hosts = world
		}
	}
	for _, w := range k.workers {
		w.setHosts(renderHosts(entries, w.namespace))
	}
}

// hostEntry is one Service name resolved to one Pod address.
type hostEntry struct{ namespace, service, ip string }

// serviceEntries resolves each Service with a selector to the first ready,
// not terminating Pod (by name) its selector matches, as kube-proxy would
// only send traffic to ready endpoints. Services without one are left out.
func serviceEntries(svcs []*corev1.Service, pods []*corev1.Pod) []hostEntry {
	pods = slices.Clone(pods)
	sort.Slice(pods, func(i, j int) bool { return pods[i].Namespace+"/"+pods[i].Name < pods[j].Namespace+"/"+pods[j].Name })
	var entries []hostEntry
	for _, svc := range svcs {
		if len(svc.Spec.Selector) == 0 {
			continue
		}
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		for _, p := range pods {
			if p.Namespace == svc.Namespace && p.DeletionTimestamp == nil && p.Status.PodIP != "" && podReady(p) && sel.Matches(labels.Set(p.Labels)) {
				entries = append(entries, hostEntry{svc.Namespace, svc.Name, p.Status.PodIP})
				break
			}
		}
	}
	slices.SortFunc(entries, func(a, b hostEntry) int { return strings.Compare(a.namespace+"/"+a.service, b.namespace+"/"+b.service) })
	return entries
}

// renderHosts is the hosts file seen from namespace ns ("": the world, no short names).
func renderHosts(entries []hostEntry, ns string) string {
	var b strings.Builder
	b.WriteString(hostsHeader)
	for _, e := range entries {
		names := serviceDNSNames(e.service, e.namespace, "cluster.local")
		if e.namespace != ns {
			names = names[1:]
		}
		fmt.Fprintf(&b, "%s %s\n", e.ip, strings.Join(names, " "))
	}
	return b.String()
}

// writeInPlace rewrites a bind-mounted file without replacing its inode.
func writeInPlace(path, content string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(content); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (k *Kubelet) logf(format string, args ...any) {
	f, err := os.OpenFile(filepath.Join(k.dir, "kubelet.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return
	}
	defer func() { _ = f.Close() }()
	_, _ = fmt.Fprintf(f, "%s %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// Stop stops every Pod's containers (SIGTERM, then SIGKILL after a grace
// period), tears their sandboxes down and stops watching.
func (k *Kubelet) Stop() {
	k.mu.Lock()
	k.stopped = true
	ws := make([]*podWorker, 0, len(k.workers))
	for _, w := range k.workers {
		ws = append(ws, w)
	}
	k.mu.Unlock()
	close(k.stopInf)
	<-k.done
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.shutdown()
		}()
	}
	wg.Wait()
	_ = os.Remove(k.base) // only when empty: a sandbox left in place (see teardown) keeps it
}
