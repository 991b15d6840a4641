package controllers

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	"github.com/gravitational/teleport/api/types"
	"github.com/gravitational/trace"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
)

// Finalizer holds a registered Cluster until its db resources are removed from Teleport.
const Finalizer = "cnpg-teleport.io/finalizer"

// Event reasons, on the Cluster.
const (
	ReasonRegistered          = "Registered"
	ReasonDeregistered        = "Deregistered"
	ReasonKept                = "Kept"
	ReasonTeleportUnavailable = "TeleportUnavailable"
	ReasonInvalidAnnotation   = "InvalidAnnotation"
	ReasonNameConflict        = "NameConflict"
	ReasonServerCAMissing     = "ServerCAMissing"
	// ReasonTeleportRefused: Teleport said BadParameter or AccessDenied,
	// which retrying does not change (its role, or the resource, must).
	ReasonTeleportRefused = "TeleportRefused"
	// ReasonSecretForbidden: Kubernetes refused (403) a Secret read.
	ReasonSecretForbidden = "SecretForbidden"
)

// ClusterReconciler keeps the Teleport db resources of an annotated CNPG
// Cluster equal to what the Cluster asks for, and removes them when the
// Cluster is deleted or opts out.
type ClusterReconciler struct {
	Client    client.Client // cached Clusters
	APIReader client.Reader // uncached: Secrets are read directly, never cached
	Teleport  Teleport
	Recorder  events.EventRecorder
	Options   dbspec.Options
	// Resync is how often a registered Cluster is compared with Teleport again.
	Resync time.Duration
	// Retry is the wait before retrying when a dependency (server CA) is missing.
	Retry time.Duration
	// TrustPoll is how often CNPG's status is read while the registration
	// waits for PostgreSQL to run the client-CA bundle.
	TrustPoll time.Duration
	// Concurrent is how many Clusters are reconciled at once (default 1).
	Concurrent int
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Agents checks that a database agent serves each registered db (nil: no check).
	Agents *AgentCheck
	// Owned indexes each Cluster's db names, shared with the orphan
	// collector, which refreshes it from its lists (nil: its own).
	Owned     *ownedIndex
	ownedOnce sync.Once

	// recent remembers this process's own writes for readLag, because
	// Teleport's reads lag its writes (its cache): a stale read must neither
	// create twice, nor update twice, nor be taken for someone else's name.
	recent recentWrites
	shared sharedReads
	// pending: since when each Cluster waits for CNPG to run its bundle.
	pending byCluster[time.Time]
	// bundles: the digest of the inputs of the last bundle found equal to
	// what they build; while they stay the same a pass neither parses nor
	// builds anything (make bench: rebuilding on every pass was a third of
	// all the controller allocated). 32 bytes a Cluster.
	bundles byCluster[[sha256.Size]byte]
	warned  warnings
	risky   warnings // the role check's findings: kept across successful passes
	// auto: auto-users notes, kept until the admin is ready or let go;
	// autoReady: whether AutoUsersReady was reported for each Cluster.
	auto      warnings
	autoReady byCluster[bool]
}

// readLag bounds how long Teleport's reads may trail its writes.
const readLag = 10 * time.Second

// Reconcile: get -> deletion branch -> parse -> finalizer -> trust -> gather -> apply.
func (r *ClusterReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var c cnpgv1.Cluster
	if err := r.Client.Get(ctx, req.NamespacedName, &c); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	ctx = withPassSecrets(ctx)
	if !c.DeletionTimestamp.IsZero() || !OptedIn(&c) {
		if !controllerutil.ContainsFinalizer(&c, Finalizer) {
			return ctrl.Result{}, r.poolersWithoutCluster(ctx, &c)
		}
		if err := r.finalize(ctx, &c); err != nil {
			return r.outcome(err)
		}
		return ctrl.Result{}, nil
	}
	// Bad input first: nothing, not even the finalizer, is applied.
	spec, err := ParseAnnotations(r.Options, &c)
	if err != nil {
		r.Recorder.Eventf(&c, nil, corev1.EventTypeWarning, ReasonInvalidAnnotation, "Parse", "nothing applied: %v", err)
		return ctrl.Result{}, reconcile.TerminalError(err)
	}
	if !controllerutil.ContainsFinalizer(&c, Finalizer) {
		// Before anything is made; the patched c carries the new
		// resourceVersion, so the pass goes on (its own pass cost every new
		// Cluster a trip through the queue: make bench).
		if err := r.patchFinalizer(ctx, &c, true); err != nil {
			return ctrl.Result{}, client.IgnoreNotFound(err) // gone: nothing to make
		}
	}
	// PostgreSQL trusts Teleport first: a db registered before would not connect.
	trusted, poolers, err := r.trust(ctx, &c, &spec)
	if err != nil || !trusted {
		return r.trustOutcome(&c, err)
	}
	ca, err := r.serverCA(ctx, &c)
	if err != nil {
		return r.waitForCA(&c, err)
	}
	desired, err := BuildDatabases(r.Options, &c, spec, ca)
	if err != nil {
		return r.waitForCA(&c, err)
	}
	viaPoolers, clash, err := BuildPoolerDatabases(r.Options, &c, spec, poolers, ca)
	if err != nil {
		return r.waitForCA(&c, err)
	}
	for _, name := range clash {
		r.warned.warn(r.Recorder, &c, ReasonNameConflict, "Register", "Pooler %s: its Teleport db name is another Pooler's or longer than 63 characters; rename it (or shorten cnpg-teleport.io/name)", name)
	}
	desired = append(desired, viaPoolers...)
	err = r.apply(ctx, &c, desired)
	if err == nil {
		r.warned.clear(&c)
		r.checkRoles(ctx, &c, spec, desired)
		r.Agents.Track(&c, desired)
	}
	return r.outcome(err)
}

// The queue's priorities (controller-runtime's priority queue; a Cluster's
// events come in at 0): a Cluster whose certificates CNPG now reports (its
// trust step done, its registration next: reportedFirst) goes before
// Clusters not started yet, so that many Clusters created at once are
// registered one after another rather than all trusted first and then all
// registered; a resync, which nothing asked for, goes after both, so that it
// never delays a change (a deletion, a new annotation) queued behind a
// thousand resyncs. A later event raises a waiting Cluster to at least 0.
// (Raising every waiting pass instead cost a pass more per Cluster in make
// bench: the Cluster's own trust patch wakes it at once, before CNPG reports.)
const (
	priorityReported = 1
	priorityResync   = handler.LowPriority
)

// resync is the result of a pass with nothing left to do but the next resync.
func (r *ClusterReconciler) resync() ctrl.Result {
	return ctrl.Result{RequeueAfter: r.Resync, Priority: new(priorityResync)}
}

// outcome classifies the error of a pass: none, or only ones that wait for
// a person (a name conflict, orphan collection, a refusal by Teleport), look
// again at the next resync, without a retry storm; one that waits for CNPG
// looks again in issuePoll; any other is returned for a retry with backoff.
func (r *ClusterReconciler) outcome(err error) (ctrl.Result, error) {
	if errors.Is(err, errWaiting) {
		return ctrl.Result{RequeueAfter: issuePoll}, nil
	}
	if err != nil && !waitsForAPerson(err) {
		return ctrl.Result{}, err
	}
	return r.resync(), nil
}

// issuePoll is how often a step waiting for cert-manager or for CNPG to
// leave a certificate looks again: neither a Certificate's Ready condition
// nor CNPG's phase wakes the controller.
const issuePoll = time.Second

// trustOutcome is the result of a pass whose trust step is not done.
func (r *ClusterReconciler) trustOutcome(c *cnpgv1.Cluster, err error) (ctrl.Result, error) {
	switch {
	case errors.Is(err, errNotOurs), errors.Is(err, errRefused):
		return r.resync(), nil // waits for a person
	case apierrors.IsForbidden(err):
		return r.forbidden(c, "Trust", err)
	case errors.Is(err, errWaiting):
		return ctrl.Result{RequeueAfter: issuePoll}, nil
	case err != nil:
		return ctrl.Result{}, err
	}
	// CNPG reporting the bundle wakes us (reportedFirst); the poll is the fallback.
	return ctrl.Result{RequeueAfter: r.TrustPoll}, nil
}

func (r *ClusterReconciler) waitForCA(c *cnpgv1.Cluster, err error) (ctrl.Result, error) {
	if apierrors.IsForbidden(err) {
		return r.forbidden(c, "Register", err)
	}
	r.warned.warn(r.Recorder, c, ReasonServerCAMissing, "Register", "waiting for the server CA: %v", err)
	return ctrl.Result{RequeueAfter: r.Retry}, nil
}

// forbidden reports a Secret read Kubernetes refused (403): the
// controller's RBAC must change, which wakes nothing, so look again at the
// next resync rather than retrying.
func (r *ClusterReconciler) forbidden(c *cnpgv1.Cluster, action string, err error) (ctrl.Result, error) {
	r.warned.warn(r.Recorder, c, ReasonSecretForbidden, action,
		"the controller may not read a Secret it needs (grant it get on Secrets in %s; next look in %s): %v", c.Namespace, r.Resync, err)
	return r.resync(), nil
}

func (r *ClusterReconciler) now() time.Time {
	if r.Now == nil {
		return time.Now()
	}
	return r.Now()
}

// serverCASecret is spec.certificates.serverCASecret, else CNPG's <cluster>-ca.
func serverCASecret(c *cnpgv1.Cluster) string {
	if c.Spec.Certificates != nil && c.Spec.Certificates.ServerCASecret != "" {
		return c.Spec.Certificates.ServerCASecret
	}
	return c.Name + "-ca"
}

// serverCA reads the live server CA certificate (ca.crt) of the Cluster.
func (r *ClusterReconciler) serverCA(ctx context.Context, c *cnpgv1.Cluster) ([]byte, error) {
	var s corev1.Secret
	key := k8stypes.NamespacedName{Namespace: c.Namespace, Name: serverCASecret(c)}
	if err := r.getSecret(ctx, key, &s); err != nil {
		return nil, fmt.Errorf("secret %s: %w", key, err)
	}
	if len(s.Data["ca.crt"]) == 0 {
		return nil, fmt.Errorf("secret %s has no ca.crt", key)
	}
	return s.Data["ca.crt"], nil
}

// errConflict marks a name held by a db resource this Cluster does not own.
var errConflict = errors.New("name conflict")

// apply creates and updates the desired db resources and deletes the
// Cluster's own ones that are no longer desired. It writes only on change.
func (r *ClusterReconciler) apply(ctx context.Context, c *cnpgv1.Cluster, desired []types.Database) error {
	names := make([]string, 0, len(desired))
	for _, d := range desired {
		names = append(names, d.GetName())
	}
	if err := r.seedIndex(ctx); err != nil {
		return r.unavailable(c, "Register", err)
	}
	if r.index().firstApply(string(c.UID)) {
		names = nil // a new Cluster: created, and read only where a create meets one
	}
	visible, owned, err := r.readOwned(ctx, c, names)
	if err != nil {
		return r.unavailable(c, "Register", err)
	}
	create, update, remove := dbspec.Diff(desired, owned)
	var errs []error
	var done changes
	for _, d := range create {
		errs = append(errs, r.create(ctx, c, d, visible[d.GetName()], &done))
	}
	for _, d := range update {
		errs = append(errs, r.update(ctx, c, d, visible[d.GetName()], &done))
	}
	for _, d := range remove {
		errs = append(errs, r.delete(ctx, c, d, &done))
	}
	done.report(r.Recorder, c)
	return errors.Join(errs...)
}

// changes collects the writes of a pass, reported as one Event per reason:
// client-go folds Events of the same object, reason and action recorded
// within minutes into a series that shows only the first note, so one Event
// per write would hide every db after the first.
type changes struct{ registered, removed []string }

func (ch *changes) report(rec events.EventRecorder, c *cnpgv1.Cluster) {
	if len(ch.registered) > 0 {
		rec.Eventf(c, nil, corev1.EventTypeNormal, ReasonRegistered, "Register", "%s", strings.Join(ch.registered, "; "))
	}
	if len(ch.removed) > 0 {
		rec.Eventf(c, nil, corev1.EventTypeNormal, ReasonDeregistered, "Deregister", "removed Teleport db %s", strings.Join(ch.removed, ", "))
	}
}

// create registers d, or adopts the resource of its name that was seen.
func (r *ClusterReconciler) create(ctx context.Context, c *cnpgv1.Cluster, d, seen types.Database, done *changes) error {
	if seen != nil {
		return r.adopt(ctx, c, d, seen, done)
	}
	if r.recent.withinFor(d, r.now(), readLag) {
		return nil // created by an earlier pass; the read that missed it is stale (no second create call)
	}
	r.index().addName(string(c.UID), d.GetName()) // before: a create that answers late is still looked for
	err := r.Teleport.CreateDatabase(ctx, d)
	switch {
	case err == nil:
		r.recent.wrote(d, r.now())
		done.registered = append(done.registered, fmt.Sprintf("registered Teleport db %s (%s)", d.GetName(), d.GetURI()))
		return nil
	case trace.IsAlreadyExists(err):
		// One this pass did not read (a new Cluster's; our own recent writes
		// were skipped above), or one we may not see (another owner): look.
		got, gerr := r.Teleport.GetDatabase(ctx, d.GetName())
		switch {
		case gerr == nil:
			return r.adopt(ctx, c, d, got, done)
		case trace.IsNotFound(gerr) || trace.IsAccessDenied(gerr):
			return r.conflict(c, d.GetName(), "exists and is not visible as ours")
		default:
			return r.unavailable(c, "Register", gerr)
		}
	default:
		return r.unavailable(c, "Register", err)
	}
}

// adopt handles seen, the resource that holds d's name: c's own is updated
// if it differs; one this controller made for an earlier Cluster of the
// same namespace and name (deleted and re-created, so another UID) is taken
// over; any other owner's is a conflict and left untouched.
func (r *ClusterReconciler) adopt(ctx context.Context, c *cnpgv1.Cluster, d, seen types.Database, done *changes) error {
	if OwnedByCluster(seen, r.Options, c) {
		r.index().addName(string(c.UID), d.GetName())
		if !dbspec.NeedsUpdate(d, seen) {
			return nil
		}
		return r.update(ctx, c, d, seen, done)
	}
	if ns, name, _, ok := dbspec.ClusterRef(seen); ok && dbspec.OwnedBy(seen, r.Options) && ns == c.Namespace && name == c.Name {
		r.index().addName(string(c.UID), d.GetName()) // ours now: read by name from now on
		return r.update(ctx, c, d, seen, done)
	}
	return r.conflict(c, d.GetName(), "exists with other owner labels")
}

func (r *ClusterReconciler) update(ctx context.Context, c *cnpgv1.Cluster, d, actual types.Database, done *changes) error {
	if r.recent.same(d, r.now(), readLag) {
		return nil // written already; the read that differs is stale
	}
	if err := r.Teleport.UpdateDatabase(ctx, dbspec.ForUpdate(d, actual)); err != nil {
		return r.unavailable(c, "Register", err)
	}
	r.recent.wrote(d, r.now())
	done.registered = append(done.registered, "updated Teleport db "+d.GetName())
	return nil
}

func (r *ClusterReconciler) delete(ctx context.Context, c *cnpgv1.Cluster, d types.Database, done *changes) error {
	err := r.Teleport.DeleteDatabase(ctx, d.GetName())
	if trace.IsNotFound(err) {
		r.index().removeName(string(c.UID), d.GetName())
		return nil // gone already (a stale read listed it)
	}
	if err != nil {
		return r.unavailable(c, "Deregister", err)
	}
	r.index().removeName(string(c.UID), d.GetName())
	r.recent.forget(d.GetName())
	done.removed = append(done.removed, d.GetName())
	return nil
}

// errRefused marks an answer of Teleport that retrying does not change.
var errRefused = errors.New("refused by Teleport")

// refusedError is a refused call's error: errRefused, and still the trace
// kind of Teleport's answer.
type refusedError struct{ err error }

func (e refusedError) Error() string        { return "teleport (refused): " + e.err.Error() }
func (e refusedError) Unwrap() error        { return e.err }
func (e refusedError) Is(target error) bool { return target == errRefused }

// waitsForAPerson reports whether every joined error is a name conflict or
// a refusal by Teleport: nothing a retry can fix.
func waitsForAPerson(err error) bool {
	var joined interface{ Unwrap() []error }
	if errors.As(err, &joined) {
		for _, e := range joined.Unwrap() {
			if e != nil && !waitsForAPerson(e) {
				return false
			}
		}
		return true
	}
	return errors.Is(err, errConflict) || errors.Is(err, errRefused)
}

// refused reports a Teleport answer retrying cannot change: BadParameter
// (the resource is invalid) or AccessDenied (the controller's role).
func refused(err error) bool { return trace.IsBadParameter(err) || trace.IsAccessDenied(err) }

// conflict reports a name held by a db resource this Cluster does not own:
// nothing is touched, and retrying would not help until a person acts.
func (r *ClusterReconciler) conflict(c *cnpgv1.Cluster, name, why string) error {
	r.warned.warn(r.Recorder, c, ReasonNameConflict, "Register",
		"Teleport db %s %s: left untouched; set the cnpg-teleport.io/name annotation to choose another name", name, why)
	return fmt.Errorf("teleport db %s: %w", name, errConflict)
}

// unavailable reports a failed Teleport call; the error is returned for a
// retry with backoff, or, refused, marked errRefused for a look at the next resync.
func (r *ClusterReconciler) unavailable(c *cnpgv1.Cluster, action string, err error) error {
	if refused(err) {
		r.warned.warn(r.Recorder, c, ReasonTeleportRefused, action,
			"Teleport refused the call, retrying will not help (check the controller's Teleport role; next look in %s): %v", r.Resync, err)
		return refusedError{err}
	}
	r.warned.warn(r.Recorder, c, ReasonTeleportUnavailable, action, "Teleport call failed, retrying: %v", err)
	return fmt.Errorf("teleport: %w", err)
}

// finalize removes the Cluster's own db resources (unless kept), then undoes
// the trust step (an opted-out Cluster: Teleport stops offering the db before
// PostgreSQL stops trusting it), then drops the finalizer.
func (r *ClusterReconciler) finalize(ctx context.Context, c *cnpgv1.Cluster) error {
	keep, err := keepOnDelete(c)
	if err != nil {
		// Guessing either way could lose the db resources or keep them against
		// the user's will: wait for the annotation to be fixed (its edit wakes us).
		r.warned.warn(r.Recorder, c, ReasonInvalidAnnotation, "Deregister",
			"deregistration waits: %v; fix it, or remove the finalizer %s by hand (orphan collection then deletes the db resources not labelled kept)", err, Finalizer)
		return reconcile.TerminalError(err)
	}
	_, all, err := r.readOwned(ctx, c, endpointNames(r.Options, c))
	if err != nil && refused(err) {
		return r.unavailable(c, "Deregister", err)
	}
	if err != nil {
		r.warned.warn(r.Recorder, c, ReasonTeleportUnavailable, "Deregister",
			"deregistration waits for Teleport (%v); to give up, remove the finalizer %s by hand (orphan collection deletes the db resources later)", err, Finalizer)
		return fmt.Errorf("teleport: %w", err)
	}
	if err := r.release(ctx, c, keep, all); err != nil {
		return err
	}
	if err := r.untrust(ctx, c); err != nil {
		return err
	}
	r.warned.clear(c)
	r.risky.clear(c)
	r.Agents.Forget(c.UID)
	r.index().forget(string(c.UID))
	r.pending.forget(c.UID)
	r.pending.forget(c.UID + "/auto")
	r.bundles.forget(c.UID)
	r.auto.clear(c)
	r.autoReady.forget(c.UID)
	riskyRoles.DeleteLabelValues(c.Namespace, c.Name)
	return client.IgnoreNotFound(r.patchFinalizer(ctx, c, false))
}

// endpointNames are the names c's endpoints have under its current
// annotations (none when they do not parse): with the index, what a
// deregistration reads.
func endpointNames(o dbspec.Options, c *cnpgv1.Cluster) []string {
	spec, err := ParseAnnotations(o, c)
	if err != nil {
		return nil
	}
	return []string{spec.DBName("rw"), spec.DBName("ro"), spec.DBName("r")}
}

// index is the reconciler's owned index (its own when none is shared).
func (r *ClusterReconciler) index() *ownedIndex {
	r.ownedOnce.Do(func() {
		if r.Owned == nil {
			r.Owned = newOwnedIndex()
		}
	})
	return r.Owned
}

// release deletes the Cluster's own db resources or, with keep, makes sure
// each carries the keep label before the finalizer goes: orphan collection
// reads that label, not the annotation of a Cluster that no longer exists.
// Besides those in all (a list that may trail Teleport's writes), it
// handles those this process wrote for the Cluster within the read lag.
func (r *ClusterReconciler) release(ctx context.Context, c *cnpgv1.Cluster, keep bool, all []types.Database) error {
	listed := map[string]bool{}
	var own []types.Database
	for _, db := range all {
		if OwnedByCluster(db, r.Options, c) {
			listed[db.GetName()] = true
			own = append(own, db)
		}
	}
	own = append(own, r.recent.since(r.now(), readLag, func(db types.Database) bool {
		return OwnedByCluster(db, r.Options, c) && !listed[db.GetName()]
	})...)
	var errs []error
	var done changes
	defer done.report(r.Recorder, c)
	for _, db := range own {
		switch {
		case !keep:
			errs = append(errs, r.delete(ctx, c, db, &done))
		case !dbspec.Kept(db):
			kept := db.Copy()
			labels := kept.GetStaticLabels()
			labels[dbspec.LabelKeep] = "true"
			kept.SetStaticLabels(labels)
			if err := r.Teleport.UpdateDatabase(ctx, kept); err != nil && !trace.IsNotFound(err) {
				errs = append(errs, r.unavailable(c, "Deregister", err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if keep {
		r.Recorder.Eventf(c, nil, corev1.EventTypeNormal, ReasonKept, "Deregister", "cnpg-teleport.io/keep: db resources left in Teleport")
	}
	return nil
}

// patchFinalizer adds or removes only our finalizer, with an optimistic lock.
func (r *ClusterReconciler) patchFinalizer(ctx context.Context, c *cnpgv1.Cluster, add bool) error {
	patch := client.MergeFromWithOptions(c.DeepCopy(), client.MergeFromWithOptimisticLock{})
	if add {
		controllerutil.AddFinalizer(c, Finalizer)
	} else {
		controllerutil.RemoveFinalizer(c, Finalizer)
	}
	if err := r.Client.Patch(ctx, c, patch); err != nil {
		return fmt.Errorf("finalizer: %w", err)
	}
	return nil
}
