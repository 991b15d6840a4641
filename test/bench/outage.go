package bench

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// OutageConfig sizes a Teleport outage (issue 21): Before Clusters are
// registered; Teleport (auth, proxy, agent) stops; Deleted of them are
// deleted and Created new ones created while it is down for Down; then it
// starts again on the same data.
type OutageConfig struct {
	Dir                      string
	Before, Deleted, Created int
	Down                     time.Duration
	Resync                   time.Duration
	Log                      io.Writer
}

// OutageResult is what an outage measured.
type OutageResult struct {
	Converge    time.Duration  // Teleport ready again -> every db resource as it should be, every deleted Cluster gone
	During      map[string]int // Events emitted while Teleport was down, by "Type/Reason"
	Creates     int            // the controller's db.create in Teleport's audit log, over the whole run
	Deletes     int            // and its db.delete
	Survivors   int            // Clusters registered before and not deleted
	BundlesKept int            // of them, those whose client-CA bundle stayed byte for byte while Teleport was down
	Extra       []string       // db resources at the end that should not be there
	Missing     []string       // Clusters at the end without their two db resources
}

// Outage runs the outage scenario against the bench's world (the real
// apiserver, the real Teleport, the controller's binary, CNPG's status played).
func Outage(ctx context.Context, cfg OutageConfig) (*OutageResult, error) {
	r := &run{cfg: Config{Dir: cfg.Dir, AtOnce: cfg.Before + cfg.Created, Foreign: []int{0}, Resync: cfg.Resync, Log: cfg.Log}}
	defer r.stop()
	if err := r.start(ctx); err != nil {
		return nil, fmt.Errorf("world: %w\n%s", err, r.tail())
	}
	res := &OutageResult{Survivors: cfg.Before - cfg.Deleted}
	err := r.outage(ctx, cfg, res)
	if err != nil {
		err = fmt.Errorf("%w\n%s", err, r.tail())
	}
	return res, err
}

func (r *run) outage(ctx context.Context, cfg OutageConfig, res *OutageResult) error {
	before, created := r.keys(0, cfg.Before), r.keys(cfg.Before, cfg.Before+cfg.Created)
	deleted, survivors := before[:cfg.Deleted], before[cfg.Deleted:]
	create := func(keys []client.ObjectKey) error {
		return parallel(ctx, len(keys), func(i int) error { return r.kube.Create(ctx, cluster(keys[i].Namespace, keys[i].Name)) })
	}
	if err := create(before); err != nil {
		return err
	}
	if err := poll(ctx, 2*time.Minute, "registered before the outage", func() error { return r.registeredExactly(before, res) }); err != nil {
		return err
	}
	r.logf("   %d Clusters registered", cfg.Before)
	bundles, err := r.bundles(ctx, survivors)
	if err != nil {
		return err
	}

	down := time.Now()
	r.tp.Stop()
	r.logf("   Teleport stopped")
	if err := parallel(ctx, len(deleted), func(i int) error {
		return r.kube.Delete(ctx, &cnpgv1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: deleted[i].Namespace, Name: deleted[i].Name}})
	}); err != nil {
		return err
	}
	if err := create(created); err != nil {
		return err
	}
	select { // the outage itself: its length is the scenario, nothing is waited for
	case <-time.After(time.Until(down.Add(cfg.Down))):
	case <-ctx.Done():
		return ctx.Err()
	}
	after, err := r.bundles(ctx, survivors)
	if err != nil {
		return err
	}
	for k, data := range after {
		if equalData(data, bundles[k]) {
			res.BundlesKept++
		}
	}
	if err := r.present(ctx, deleted, true); err != nil { // nothing lost: each waits for Teleport to deregister it
		return fmt.Errorf("while Teleport was down (its db resources would be orphans): %w", err)
	}
	if err := r.tp.Start(); err != nil {
		return err
	}
	up := time.Now()
	res.During = r.events.between(down, up)
	r.logf("   Teleport back after %.0f s; Events meanwhile: %v", up.Sub(down).Seconds(), res.During)
	if err := poll(ctx, 5*time.Minute, "converged after the outage", func() error {
		if err := r.registeredExactly(append(slices.Clone(survivors), created...), res); err != nil {
			return err
		}
		return r.present(ctx, deleted, false)
	}); err != nil {
		return err
	}
	res.Converge = time.Since(up)
	res.Creates = r.tp.AuditCountBy(fatal{}, kubeUser, "db.create")
	res.Deletes = r.tp.AuditCountBy(fatal{}, kubeUser, "db.delete")
	r.logf("   converged %.1f s after Teleport was back; creates %d, deletes %d", res.Converge.Seconds(), res.Creates, res.Deletes)
	return nil
}

// keys are the Clusters from to to (clusterAt).
func (r *run) keys(from, to int) []client.ObjectKey {
	var out []client.ObjectKey
	for i := from; i < to; i++ {
		ns, name := r.clusterAt(i)
		out = append(out, client.ObjectKey{Namespace: ns, Name: name})
	}
	return out
}

// registeredExactly: Teleport holds the rw and ro of each of keys and no
// other db resource of the controller's (res.Extra and res.Missing say what differs).
func (r *run) registeredExactly(keys []client.ObjectKey, res *OutageResult) error {
	r.dbs.mu.Lock()
	defer r.dbs.mu.Unlock()
	want := map[string]bool{}
	for _, k := range keys {
		want[k.String()] = true
	}
	res.Extra, res.Missing = nil, nil
	per := map[string]int{}
	for name, c := range r.dbs.cluster {
		if !want[c] {
			res.Extra = append(res.Extra, name)
		}
		per[c]++
	}
	for c := range want {
		if per[c] != 2 {
			res.Missing = append(res.Missing, c)
		}
	}
	if len(res.Extra)+len(res.Missing) > 0 {
		return fmt.Errorf("%d db resources that should not be there, %d Clusters without their two", len(res.Extra), len(res.Missing))
	}
	return nil
}

// bundles reads the client-CA bundle Secret of each Cluster.
func (r *run) bundles(ctx context.Context, keys []client.ObjectKey) (map[string]map[string][]byte, error) {
	out := map[string]map[string][]byte{}
	for _, k := range keys {
		var s corev1.Secret
		if err := r.kube.Get(ctx, client.ObjectKey{Namespace: k.Namespace, Name: k.Name + "-teleport-ca"}, &s); err != nil {
			return nil, err
		}
		out[k.String()] = s.Data
	}
	return out, nil
}

// present checks that every Cluster of keys exists (want) or is gone.
func (r *run) present(ctx context.Context, keys []client.ObjectKey, want bool) error {
	for _, k := range keys {
		var c cnpgv1.Cluster
		err := r.kube.Get(ctx, k, &c)
		switch {
		case want && err != nil:
			return fmt.Errorf("deleted Cluster %s gone: %w", k, err)
		case !want && err == nil:
			return fmt.Errorf("deleted Cluster %s still there", k)
		case !want && !apierrors.IsNotFound(err):
			return fmt.Errorf("deleted Cluster %s: %w", k, err)
		}
	}
	return nil
}

func equalData(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || string(v) != string(w) {
			return false
		}
	}
	return true
}
