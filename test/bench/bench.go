// Package bench measures the controller (make bench) against the test
// world: the real kube-apiserver and etcd with the CNPG CRDs, the real
// Teleport v13.3.8 (auth, proxy, database agent, tctl, tsh) and the
// controller's binary, with its own metrics, the apiserver's audit log and
// Teleport's event stream and audit log as the meters. What CNPG does for a
// registration (report the client CA it runs) is played by statusWriter:
// no machine here runs a thousand PostgreSQL clusters.
package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	tpclient "github.com/gravitational/teleport/api/client"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnpg-teleport/cnpg-teleport/controllers"
	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
	"github.com/cnpg-teleport/cnpg-teleport/test/world"
)

// Config sizes a run.
type Config struct {
	Dir        string        // logs and data
	Sequential int           // Clusters created one at a time (latency), then deleted one at a time
	AtOnce     int           // Clusters created at once (convergence, steady state, memory)
	Foreign    []int         // foreign db resources present for each steady-state measurement, ascending
	Secrets    int           // unrelated Secrets in the apiserver
	Resyncs    int           // resyncs per steady-state measurement (and by-hand syncs)
	Resync     time.Duration // the controller's --resync-period
	Tsh        int           // of the Sequential, the last Tsh also time annotate -> visible in `tsh db ls` (polled: not in Register)
	Args       []string      // more controller flags
	Log        io.Writer     // progress
}

// Steady is one steady-state measurement.
type Steady struct {
	Foreign        int
	Passes         int            // Cluster reconciles in the window
	Resyncs        float64        // Passes / Clusters
	Calls          map[string]int // Teleport calls by method
	TeleportWrites int            // from the controller's metrics
	AuditWrites    int            // db.create/update/delete by the controller's user in Teleport's audit log
	KubeWrites     map[string]int // from the apiserver's audit log
	ReadsPerPass   float64        // Teleport reads per Cluster per resync
}

// Result is everything a run measured.
type Result struct {
	Config         Config
	Register       []time.Duration // annotate -> rw and ro acknowledged by Teleport (the controller's Registered Events)
	Visible        []time.Duration // annotate -> both in `tsh db ls`
	TshPoll        time.Duration   // the mean `tsh db ls` round (the resolution of Visible)
	Delete         []time.Duration // delete -> both deregistered (Deregistered Events)
	Converge       time.Duration   // AtOnce Clusters created at once -> all their db resources in Teleport
	Curve          []Point         // their db resources in Teleport over time
	ConvergeCalls  map[string]int
	ConvergeWrites map[string]int // Kubernetes writes by the controller
	ConvergeKube   map[string]int // the controller's Kubernetes requests by HTTP method (its own client metrics)
	Steady         []Steady
	ByHandWrites   int // Teleport writes of Resyncs by-hand syncs of AtOnce Clusters (Teleport's audit log)
	ByHandTime     time.Duration
	RSSPeak, RSS   float64  // MiB
	HeapInUse      float64  // MiB, the Go runtime's (go_memstats_heap_inuse_bytes) at the end
	CPU            float64  // seconds of CPU the controller used over the run
	PeakAt         string   // the phase in which the sampled RSS was highest
	PeakSample     Resident // that sample: how much of it was the binary's file pages, how much anonymous
}

const (
	kubeUser     = "cnpg-teleport-bench"
	kubeCluster  = "bench"
	metricsAddr  = "127.0.0.1:18080"
	pprofAddr    = "127.0.0.1:18082"
	seqNamespace = "bench-seq"
)

// Run starts a world, runs every phase and stops the world.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	r := &run{cfg: cfg, res: &Result{Config: cfg}}
	defer r.stop()
	for _, step := range []struct {
		name string
		f    func(context.Context) error
	}{
		{"world", r.start},
		{"latency", r.latency},
		{"convergence", r.converge},
		{"steady state and by hand", r.steady},
		{"deletion", r.deletion},
		{"memory", r.memory},
	} {
		t := time.Now()
		r.logf("== %s", step.name)
		r.peak.enter(step.name)
		if err := step.f(ctx); err != nil {
			return r.res, fmt.Errorf("%s: %w\n%s", step.name, err, r.tail())
		}
		r.logf("   %s done in %.1fs", step.name, time.Since(t).Seconds())
		if step.name == "world" {
			go r.peak.sample(ctx, r.ctl.PID())
		}
	}
	r.res.PeakAt, r.res.PeakSample = r.peak.at()
	return r.res, nil
}

// peakWatch samples the controller's RSS and remembers in which phase it
// was highest (where to look for what makes the peak).
type peakWatch struct {
	mu    sync.Mutex
	phase string
	since time.Time
	max   Resident // the sample with the highest RSS
	maxAt string
}

func (p *peakWatch) enter(phase string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.phase, p.since = phase, time.Now()
}

func (p *peakWatch) sample(ctx context.Context, pid int) {
	for ctx.Err() == nil {
		if m, err := memory(pid); err == nil {
			p.mu.Lock()
			if m.Now > p.max.Now {
				p.max, p.maxAt = m, fmt.Sprintf("%s, %.0f s in", p.phase, time.Since(p.since).Seconds())
			}
			p.mu.Unlock()
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (p *peakWatch) at() (string, Resident) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.maxAt, p.max
}

type run struct {
	cfg        Config
	res        *Result
	w          *world.World
	tp         *world.Teleport
	ctl        *world.Process
	kube       client.Client // unthrottled: the benchmark's own writes
	audit      string
	dbs        *dbWatch
	events     *events
	caPEM      []byte
	caKeyPEM   []byte
	stopCache  context.CancelFunc
	admin      *tpclient.Client
	foreign    int
	peak       peakWatch
	id         string // the controller's Teleport identity file
	kubeconfig string
}

func (r *run) logf(format string, args ...any) {
	if r.cfg.Log != nil {
		_, _ = fmt.Fprintf(r.cfg.Log, format+"\n", args...)
	}
}

func (r *run) tail() string {
	if r.ctl == nil {
		return ""
	}
	return "controller log (tail):\n" + r.ctl.Tail(4<<10)
}

func (r *run) stop() {
	if r.stopCache != nil {
		r.stopCache()
	}
	if r.ctl != nil {
		r.ctl.Stop()
	}
	if r.tp != nil {
		r.tp.Stop()
	}
	if r.w != nil {
		r.w.Stop()
	}
}

// start: apiserver and etcd (CRDs, an audit log), Teleport, the unrelated
// Secrets and every Cluster's CA Secret, the meters, then the controller.
func (r *run) start(ctx context.Context) error {
	opts, audit, err := world.AuditOptions(r.cfg.Dir)
	if err != nil {
		return err
	}
	opts.ControlPlaneOnly = true
	r.audit = audit
	if r.w, err = world.StartWorld(r.cfg.Dir, opts); err != nil {
		return err
	}
	cfg := rest.CopyConfig(r.w.Config)
	cfg.QPS = -1 // no client-side limit
	if r.kube, err = client.New(cfg, client.Options{Scheme: r.w.Scheme}); err != nil {
		return err
	}
	if r.tp, err = world.StartTeleport(filepath.Join(r.cfg.Dir, "teleport")); err != nil {
		return err
	}
	if r.caPEM, r.caKeyPEM, err = newCA(); err != nil {
		return err
	}
	for _, ns := range append(namespaces(r.cfg.AtOnce), seqNamespace, "unrelated") {
		if err := r.kube.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return err
		}
	}
	t := time.Now()
	if err := parallel(ctx, r.cfg.Secrets, func(i int) error {
		return r.kube.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: "unrelated", Name: fmt.Sprintf("unrelated-%05d", i)},
			Data:       map[string][]byte{"payload": []byte(strings.Repeat("x", 1024))},
		})
	}); err != nil {
		return err
	}
	if err := parallel(ctx, r.cfg.Sequential+r.cfg.AtOnce, func(i int) error {
		ns, name := r.clusterAt(i)
		return r.kube.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-ca"},
			Data:       map[string][]byte{"ca.crt": r.caPEM, "ca.key": r.caKeyPEM},
		})
	}); err != nil {
		return err
	}
	r.logf("   %d unrelated Secrets and %d CA Secrets in %.1fs", r.cfg.Secrets, r.cfg.Sequential+r.cfg.AtOnce, time.Since(t).Seconds())

	cctx, cancel := context.WithCancel(ctx)
	r.stopCache = cancel
	informers, err := cache.New(cfg, cache.Options{Scheme: r.w.Scheme})
	if err != nil {
		return err
	}
	if err := startStatusWriter(cctx, informers, r.kube, 4); err != nil {
		return err
	}
	if r.events, err = watchEvents(cctx, informers); err != nil {
		return err
	}
	go func() { _ = informers.Start(cctx) }()
	if !informers.WaitForCacheSync(ctx) {
		return fmt.Errorf("the benchmark's informers did not sync")
	}
	admin, err := adminClient(ctx, r.tp)
	if err != nil {
		return err
	}
	if r.dbs, err = watchDBs(cctx, admin); err != nil {
		return err
	}
	go func() { <-cctx.Done(); _ = admin.Close() }()
	if err := r.addForeign(ctx, admin, r.cfg.Foreign[0]); err != nil {
		return err
	}
	r.admin = admin

	id, err := r.tp.ControllerIdentity(ctx, kubeUser, 8*time.Hour, kubeCluster)
	if err != nil {
		return err
	}
	kubeconfig, err := r.w.UserKubeconfig(kubeUser, "system:masters")
	if err != nil {
		return err
	}
	r.id, r.kubeconfig = id, kubeconfig
	r.ctl, err = r.startController(ctx, "controller", metricsAddr, "127.0.0.1:18081", "--pprof-bind-address="+pprofAddr)
	return err
}

// startController starts a replica of the controller's binary with the
// run's identity, kubeconfig and flags, and waits for its metrics.
func (r *run) startController(ctx context.Context, name, metrics, probe string, extra ...string) (*world.Process, error) {
	p, err := r.w.StartControllerAs(name, r.kubeconfig, slices.Concat([]string{
		"--teleport-addr=" + r.tp.AuthAddr, "--identity-file=" + r.id, "--kube-cluster=" + kubeCluster,
		"--resync-period=" + r.cfg.Resync.String(), "--metrics-bind-address=" + metrics,
		"--health-probe-bind-address=" + probe}, extra, r.cfg.Args)...)
	if err != nil {
		return nil, err
	}
	return p, poll(ctx, time.Minute, name+"'s metrics", func() error { _, err := scrape(ctx, metrics); return err })
}

func (r *run) addForeign(ctx context.Context, admin *tpclient.Client, n int) error {
	if n <= r.foreign {
		return nil
	}
	t := time.Now()
	if err := createForeign(ctx, admin, r.foreign, n); err != nil {
		return err
	}
	r.logf("   foreign db resources %d -> %d in %.1fs", r.foreign, n, time.Since(t).Seconds())
	r.foreign = n
	return nil
}

// clusterAt names Cluster i: the first Sequential in seqNamespace, the
// others spread over namespaces of 100.
func (r *run) clusterAt(i int) (namespace, name string) {
	if i < r.cfg.Sequential {
		return seqNamespace, fmt.Sprintf("s-%04d", i)
	}
	i -= r.cfg.Sequential
	return fmt.Sprintf("bench-%02d", i/100), fmt.Sprintf("c-%04d", i)
}

func namespaces(n int) []string {
	var out []string
	for i := 0; i < n; i += 100 {
		out = append(out, fmt.Sprintf("bench-%02d", i/100))
	}
	return out
}

func cluster(ns, name string) *cnpgv1.Cluster {
	return &cnpgv1.Cluster{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{dbspec.AnnotationRegister: "true"}},
		Spec:       cnpgv1.ClusterSpec{Instances: 2, StorageConfiguration: cnpgv1.StorageConfiguration{Size: "1Gi"}},
	}
}

// latency creates Sequential Clusters one at a time, each once the last is
// registered: annotate -> the controller's Registered Event for rw and ro
// (recorded after Teleport acknowledged both creates), and, polled
// meanwhile, -> both names in `tsh db ls`.
func (r *run) latency(ctx context.Context) error {
	var tsh *tshPoller
	created := make([]time.Time, r.cfg.Sequential)
	for i := range r.cfg.Sequential {
		sample := i >= r.cfg.Sequential-r.cfg.Tsh
		if sample && tsh == nil {
			// tsh db ls in a loop takes a core: the Clusters timed for
			// Register come before it starts.
			u, err := r.tp.User(ctx, "bench-user", []string{"teleport_read"}, []string{"app"})
			if err != nil {
				return err
			}
			tsh = startTsh(ctx, u)
			defer tsh.stop()
		}
		ns, name := r.clusterAt(i)
		c := cluster(ns, name)
		created[i] = time.Now()
		if err := r.kube.Create(ctx, c); err != nil {
			return err
		}
		// One Registered Event per pass, recorded once Teleport acknowledged
		// every create of the pass; Teleport's own event stream must then
		// show both.
		at, err := r.events.waitN(ctx, c.UID, controllers.ReasonRegistered, 1, time.Minute)
		if err != nil {
			return err
		}
		key := ns + "/" + name
		if err := r.dbs.wait(ctx, time.Minute, key+": rw and ro in Teleport", func() bool {
			return r.dbs.countLocked(func(c string) bool { return c == key }) == 2
		}); err != nil {
			return err
		}
		if !sample {
			r.res.Register = append(r.res.Register, at.Sub(created[i]))
		}
	}
	if tsh == nil {
		return nil
	}
	for i := r.cfg.Sequential - r.cfg.Tsh; i < r.cfg.Sequential; i++ {
		ns, name := r.clusterAt(i)
		names := r.dbs.namesOf(ns + "/" + name)
		seen, err := tsh.waitAll(ctx, names, 2*time.Minute)
		if err != nil {
			return err
		}
		r.res.Visible = append(r.res.Visible, seen.Sub(created[i]))
	}
	r.res.TshPoll = tsh.meanRound()
	return nil
}

// converge creates AtOnce Clusters at once and waits until Teleport holds
// all their db resources, counting what the controller spent.
func (r *run) converge(ctx context.Context) error {
	calls0, writes0, err := r.meters(ctx)
	if err != nil {
		return err
	}
	batch := func(c string) bool { return !strings.HasPrefix(c, seqNamespace+"/") }
	r.dbs.startCurve(batch)
	t0 := time.Now()
	if err := parallel(ctx, r.cfg.AtOnce, func(i int) error {
		ns, name := r.clusterAt(r.cfg.Sequential + i)
		return r.kube.Create(ctx, cluster(ns, name))
	}); err != nil {
		return err
	}
	r.logf("   %d Clusters created in %.1fs", r.cfg.AtOnce, time.Since(t0).Seconds())
	err = r.dbs.wait(ctx, 15*time.Minute, "all db resources registered", func() bool { return r.dbs.countLocked(batch) == 2*r.cfg.AtOnce })
	r.res.Converge = time.Since(t0)
	r.res.Curve = r.dbs.stopCurve()
	if err != nil {
		return err
	}
	calls1, writes1, err := r.meters(ctx)
	if err != nil {
		return err
	}
	r.res.ConvergeCalls, r.res.ConvergeWrites = calls(calls0, calls1), diff(writes0, writes1)
	r.res.ConvergeKube = kubeRequests(calls0, calls1)
	passes := calls1.sum(reconciles, "controller=cluster") - calls0.sum(reconciles, "controller=cluster")
	r.logf("   %.0f Cluster passes (%.1f per Cluster)", passes, passes/float64(r.cfg.AtOnce))
	if m, err := memory(r.ctl.PID()); err == nil {
		r.logf("   controller RSS after convergence %.0f MiB (peak so far %.0f MiB)", m.Now, m.Peak)
	}
	// Where the peak is made: the heap as the last collection left it.
	return saveHeapProfile(ctx, filepath.Join(r.cfg.Dir, "heap-converged.pprof"))
}

func (r *run) meters(ctx context.Context) (metrics, map[string]int, error) {
	m, err := scrape(ctx, metricsAddr)
	if err != nil {
		return nil, nil, err
	}
	w, err := world.AuditWrites(r.audit, kubeUser)
	return m, w, err
}

// steady measures Resyncs idle resyncs for each foreign count, and between
// the two, Resyncs by-hand syncs of as many Clusters.
func (r *run) steady(ctx context.Context) error {
	if r.cfg.Resyncs == 0 {
		return nil
	}
	for i, foreign := range r.cfg.Foreign {
		if i == 1 {
			if err := r.byHand(ctx); err != nil {
				return err
			}
		}
		if err := r.addForeign(ctx, r.admin, foreign); err != nil {
			return err
		}
		s, err := r.idle(ctx)
		if err != nil {
			return err
		}
		s.Foreign = foreign
		r.res.Steady = append(r.res.Steady, s)
		r.logf("   %d foreign: %d passes, reads/pass %.2f, Teleport writes %d, Kubernetes writes %d", foreign, s.Passes, s.ReadsPerPass, s.TeleportWrites, total(s.KubeWrites))
	}
	return saveHeapProfile(ctx, filepath.Join(r.cfg.Dir, "heap-steady.pprof"))
}

// idle lets one resync pass settle what came before, then counts Resyncs more.
func (r *run) idle(ctx context.Context) (Steady, error) {
	clusters := float64(r.cfg.Sequential + r.cfg.AtOnce)
	if _, err := r.waitPasses(ctx, clusters, 1); err != nil {
		return Steady{}, err
	}
	// The agent check reports each db resource once when an agent first
	// serves it (an Event, paced): a one-time write that would land in the
	// count.
	if err := pollEvery(ctx, 2*time.Second, 5*time.Minute, "the agent check reports every db served", func() error {
		m, err := scrape(ctx, metricsAddr)
		if err != nil {
			return err
		}
		if err := agentsSettled(m); err != nil {
			return err
		}
		registered := int(m.sum("cnpg_teleport_registered_databases"))
		if n := r.events.servedDBs(); n < registered {
			return fmt.Errorf("AgentServing Events for %d of %d db resources", n, registered)
		}
		return nil
	}); err != nil {
		return Steady{}, err
	}
	calls0, writes0, err := r.meters(ctx)
	if err != nil {
		return Steady{}, err
	}
	audit0 := r.teleportAudit()
	calls1, err := r.waitPasses(ctx, clusters, r.cfg.Resyncs)
	if err != nil {
		return Steady{}, err
	}
	_, writes1, err := r.meters(ctx)
	if err != nil {
		return Steady{}, err
	}
	passes := int(calls1.sum(reconciles, "controller=cluster") - calls0.sum(reconciles, "controller=cluster"))
	c := calls(calls0, calls1)
	return Steady{
		Passes: passes, Resyncs: float64(passes) / clusters, Calls: c, TeleportWrites: teleportWrites(c),
		AuditWrites: r.teleportAudit() - audit0, KubeWrites: diff(writes0, writes1),
		ReadsPerPass: float64(teleportReads(c)) / float64(passes),
	}, nil
}

const reconciles = "controller_runtime_reconcile_total"

// waitPasses waits for n resyncs: n orphan passes and n passes per Cluster.
func (r *run) waitPasses(ctx context.Context, clusters float64, n int) (metrics, error) {
	m0, err := scrape(ctx, metricsAddr)
	if err != nil {
		return nil, err
	}
	var m metrics
	// Scraping costs the controller too: look every 2 s, not every 200 ms.
	err = pollEvery(ctx, 2*time.Second, time.Duration(n+2)*r.cfg.Resync*2, fmt.Sprintf("%d resyncs", n), func() error {
		if m, err = scrape(ctx, metricsAddr); err != nil {
			return err
		}
		passes := m.sum(reconciles, "controller=cluster") - m0.sum(reconciles, "controller=cluster")
		orphans := m.sum("cnpg_teleport_orphan_passes_total") - m0.sum("cnpg_teleport_orphan_passes_total")
		if passes < float64(n)*clusters || orphans < float64(n) {
			return fmt.Errorf("%.0f passes, %.0f orphan passes", passes, orphans)
		}
		return nil
	})
	return m, err
}

func (r *run) teleportAudit() int {
	return r.tp.AuditCountBy(fatal{}, kubeUser, "db.create", "db.update", "db.delete")
}

// byHand runs Resyncs by-hand syncs of AtOnce Clusters (rw and ro each) and
// counts their writes in Teleport's audit log.
func (r *run) byHand(ctx context.Context) error {
	count := func() int { return r.tp.AuditCount(fatal{}, "db.create", "db.update") }
	before, t := count(), time.Now()
	for range r.cfg.Resyncs {
		if err := byHandSync(ctx, r.tp, r.cfg.Dir, r.cfg.AtOnce, r.caPEM); err != nil {
			return err
		}
	}
	r.res.ByHandTime = time.Since(t)
	// Teleport writes its audit log asynchronously: wait for every write.
	want := r.cfg.Resyncs * 2 * r.cfg.AtOnce
	_ = poll(ctx, 30*time.Second, "by-hand audit events", func() error {
		if r.res.ByHandWrites = count() - before; r.res.ByHandWrites < want {
			return fmt.Errorf("%d of %d", r.res.ByHandWrites, want)
		}
		return nil
	})
	r.foreign += 2 * r.cfg.AtOnce // they are foreign db resources too
	r.logf("   by hand: %d syncs, %d Teleport writes in %.1fs", r.cfg.Resyncs, r.res.ByHandWrites, r.res.ByHandTime.Seconds())
	return nil
}

// deletion deletes the Sequential Clusters one at a time: delete -> the
// Deregistered Event of rw and ro (recorded after Teleport acknowledged both).
func (r *run) deletion(ctx context.Context) error {
	for i := range r.cfg.Sequential {
		ns, name := r.clusterAt(i)
		var c cnpgv1.Cluster
		if err := r.kube.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &c); err != nil {
			return err
		}
		t := time.Now()
		if err := r.kube.Delete(ctx, &c); err != nil {
			return err
		}
		at, err := r.events.waitN(ctx, c.UID, controllers.ReasonDeregistered, 1, time.Minute)
		if err != nil {
			return err
		}
		key := ns + "/" + name
		if err := r.dbs.wait(ctx, time.Minute, key+": rw and ro gone from Teleport", func() bool {
			return r.dbs.countLocked(func(c string) bool { return c == key }) == 0
		}); err != nil {
			return err
		}
		r.res.Delete = append(r.res.Delete, at.Sub(t))
	}
	seq := func(c string) bool { return strings.HasPrefix(c, seqNamespace+"/") }
	return r.dbs.wait(ctx, time.Minute, "every deleted Cluster's db resources gone from Teleport", func() bool { return r.dbs.countLocked(seq) == 0 })
}

func (r *run) memory(ctx context.Context) error {
	m, err := memory(r.ctl.PID())
	if err != nil {
		return err
	}
	r.res.RSSPeak, r.res.RSS = m.Peak, m.Now
	if r.res.CPU, err = cpuSeconds(r.ctl.PID()); err != nil {
		return err
	}
	metrics, err := scrape(ctx, metricsAddr)
	if err != nil {
		return err
	}
	r.res.HeapInUse = metrics.sum("go_memstats_heap_inuse_bytes") / (1 << 20)
	return saveHeapProfile(ctx, filepath.Join(r.cfg.Dir, "heap.pprof"))
}

// parallel runs f(0..n-1) on 16 workers.
func parallel(ctx context.Context, n int, f func(int) error) error {
	g, _ := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range n {
		g.Go(func() error { return f(i) })
	}
	return g.Wait()
}

func poll(ctx context.Context, timeout time.Duration, what string, check func() error) error {
	return pollEvery(ctx, 200*time.Millisecond, timeout, what, check)
}

func pollEvery(ctx context.Context, every, timeout time.Duration, what string, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %w (after %s)", what, err, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
}

type fatal struct{}

func (fatal) Fatal(args ...any) { panic(fmt.Sprint(args...)) }

// newCA is one self-signed ECDSA CA, shared by every Cluster as its server
// and client CA (CNPG's <cluster>-ca: ca.crt and an EC ca.key).
func newCA() (crtPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(30 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

// tshPoller runs `tsh db ls` in a loop and records when each name first shows.
type tshPoller struct {
	mu      sync.Mutex
	seen    map[string]time.Time
	rounds  int
	spent   time.Duration
	changed chan struct{}
	err     error
	cancel  context.CancelFunc
	done    chan struct{}
}

func startTsh(ctx context.Context, u *world.TshUser) *tshPoller {
	ctx, cancel := context.WithCancel(ctx)
	p := &tshPoller{seen: map[string]time.Time{}, changed: make(chan struct{}), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for ctx.Err() == nil {
			t := time.Now()
			names, err := u.DBNames(ctx)
			now := time.Now()
			p.mu.Lock()
			p.rounds++
			p.spent += now.Sub(t)
			if err != nil && ctx.Err() == nil {
				p.err = err
			}
			for _, n := range names {
				if _, ok := p.seen[n]; !ok {
					p.seen[n] = now
				}
			}
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
		}
	}()
	return p
}

// waitAll returns when the last of names was first seen.
func (p *tshPoller) waitAll(ctx context.Context, names []string, timeout time.Duration) (time.Time, error) {
	deadline := time.After(timeout)
	for {
		p.mu.Lock()
		var last time.Time
		all := len(names) > 0
		for _, n := range names {
			t, ok := p.seen[n]
			all = all && ok
			if t.After(last) {
				last = t
			}
		}
		ch, err := p.changed, p.err
		p.mu.Unlock()
		if all {
			return last, nil
		}
		if err != nil {
			return time.Time{}, err
		}
		select {
		case <-ch:
		case <-deadline:
			return time.Time{}, fmt.Errorf("%v not in tsh db ls within %s", names, timeout)
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}

func (p *tshPoller) meanRound() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rounds == 0 {
		return 0
	}
	return p.spent / time.Duration(p.rounds)
}

func (p *tshPoller) stop() { p.cancel(); <-p.done }
