package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// HandoverConfig sizes the leader hand-over (issue 21): two replicas with
// leader election, Clusters registered, then all deleted at once and the
// leader SIGKILLed once KillAfter of them are deregistered.
type HandoverConfig struct {
	Dir       string
	Clusters  int
	KillAfter int
	Resync    time.Duration
	Log       io.Writer
}

// HandoverResult is what a hand-over measured.
type HandoverResult struct {
	Handover time.Duration // SIGKILL -> the other replica leads
	Finish   time.Duration // SIGKILL -> every db resource gone, every Cluster gone
	Deletes  int           // the controllers' db.delete in Teleport's audit log
	Orphans  int           // of them, made by orphan collection (both replicas' logs), not by a finalizer
}

const secondMetrics = "127.0.0.1:18090"

// Handover runs the hand-over scenario against the bench's world.
func Handover(ctx context.Context, cfg HandoverConfig) (*HandoverResult, error) {
	r := &run{cfg: Config{Dir: cfg.Dir, AtOnce: cfg.Clusters, Foreign: []int{0}, Resync: cfg.Resync, Log: cfg.Log,
		Args: []string{"--leader-elect", "--leader-election-namespace=default"}}}
	defer r.stop()
	if err := r.start(ctx); err != nil {
		return nil, fmt.Errorf("world: %w\n%s", err, r.tail())
	}
	res := &HandoverResult{}
	err := r.handover(ctx, cfg, res)
	if err != nil {
		err = fmt.Errorf("%w\n%s", err, r.tail())
	}
	return res, err
}

// leads reports whether the replica serving metrics at addr holds the Lease.
func leads(ctx context.Context, addr string) error {
	m, err := scrape(ctx, addr)
	if err != nil {
		return err
	}
	if m.sum("leader_election_master_status") != 1 {
		return fmt.Errorf("%s does not lead", addr)
	}
	return nil
}

func (r *run) handover(ctx context.Context, cfg HandoverConfig, res *HandoverResult) error {
	if err := poll(ctx, time.Minute, "the first replica leads", func() error { return leads(ctx, metricsAddr) }); err != nil {
		return err
	}
	second, err := r.startController(ctx, "controller-2", secondMetrics, "127.0.0.1:18091")
	if err != nil {
		return err
	}
	defer second.Stop()
	keys := r.keys(0, cfg.Clusters)
	if err := parallel(ctx, len(keys), func(i int) error { return r.kube.Create(ctx, cluster(keys[i].Namespace, keys[i].Name)) }); err != nil {
		return err
	}
	all := func(string) bool { return true }
	if err := r.dbs.wait(ctx, 2*time.Minute, "all registered", func() bool { return r.dbs.countLocked(all) == 2*cfg.Clusters }); err != nil {
		return err
	}
	if err := leads(ctx, secondMetrics); err == nil {
		return fmt.Errorf("both replicas lead")
	}
	r.logf("   %d Clusters registered by the leader", cfg.Clusters)

	if err := parallel(ctx, len(keys), func(i int) error {
		return r.kube.Delete(ctx, &cnpgv1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: keys[i].Namespace, Name: keys[i].Name}})
	}); err != nil {
		return err
	}
	if err := r.dbs.wait(ctx, 2*time.Minute, "the first deregistrations", func() bool {
		return r.dbs.countLocked(all) <= 2*(cfg.Clusters-cfg.KillAfter)
	}); err != nil {
		return err
	}
	if err := syscall.Kill(r.ctl.PID(), syscall.SIGKILL); err != nil {
		return err
	}
	killed := time.Now()
	r.dbs.mu.Lock()
	left := r.dbs.countLocked(all)
	r.dbs.mu.Unlock()
	r.logf("   leader SIGKILLed with %d db resources left", left)
	if err := pollEvery(ctx, 50*time.Millisecond, 2*time.Minute, "the second replica leads", func() error { return leads(ctx, secondMetrics) }); err != nil {
		return err
	}
	res.Handover = time.Since(killed)
	if err := r.dbs.wait(ctx, 3*time.Minute, "every db resource deregistered", func() bool { return r.dbs.countLocked(all) == 0 }); err != nil {
		return err
	}
	if err := poll(ctx, 2*time.Minute, "every Cluster gone", func() error { return r.present(ctx, keys, false) }); err != nil {
		return err
	}
	res.Finish = time.Since(killed)
	res.Deletes = r.tp.AuditCountBy(fatal{}, kubeUser, "db.delete")
	for _, name := range []string{"controller.log", "controller-2.log"} {
		b, err := os.ReadFile(filepath.Join(r.w.Dir, name))
		if err != nil {
			return err
		}
		res.Orphans += strings.Count(string(b), "deleted orphaned Teleport db")
	}
	r.logf("   hand-over %.1f s, all gone %.1f s after the kill; %d deletes, %d by orphan collection", res.Handover.Seconds(), res.Finish.Seconds(), res.Deletes, res.Orphans)
	return nil
}
