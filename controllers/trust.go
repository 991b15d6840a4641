package controllers

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnpg-teleport/cnpg-teleport/certs"
	"github.com/cnpg-teleport/cnpg-teleport/clusterspec"
	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
	"github.com/cnpg-teleport/cnpg-teleport/pgrules"
)

// Event reasons of the trust step.
const (
	ReasonTrustConfigured = "TrustConfigured"
	ReasonTrustPending    = "TrustPending"
	ReasonTrustRemoved    = "TrustRemoved"
	ReasonTrustInvalid    = "TrustInvalid"
	ReasonObjectConflict  = "ObjectConflict"
)

// BundleSecretName is the client-CA bundle Secret of a Cluster.
func BundleSecretName(c *cnpgv1.Cluster) string { return c.Name + "-teleport-ca" }

// errNotOurs marks an object of our name that this controller did not make.
var errNotOurs = errors.New("exists and is not ours")

// errWaiting marks a step that waits for CNPG (retried with backoff).
var errWaiting = errors.New("waiting for CNPG")

// objectLabels mark the Kubernetes objects the controller makes for a Cluster.
func objectLabels(c *cnpgv1.Cluster) map[string]string {
	return map[string]string{dbspec.LabelManagedBy: dbspec.ManagedByValue, dbspec.LabelCluster: c.Name}
}

func ownedBy(o metav1.Object, c *cnpgv1.Cluster) bool {
	if o.GetLabels()[dbspec.LabelManagedBy] != dbspec.ManagedByValue {
		return false
	}
	return slices.ContainsFunc(o.GetOwnerReferences(), func(r metav1.OwnerReference) bool { return r.UID == c.UID })
}

// trust makes PostgreSQL trust Teleport's database-client CA for the
// Cluster, in order: in issuer mode the certificates CNPG cannot sign
// (through cert-manager), the bundle Secret (valid before anything points at
// it), the read and write DatabaseRoles, then the Cluster's slice
// (spec.certificates, the pg_hba and pg_ident lines, the Poolers' server
// names), then its Poolers. It reports whether CNPG runs all of it, so the db
// resources are registered only once a Teleport user can log in, and the
// Poolers registration can serve.
func (r *ClusterReconciler) trust(ctx context.Context, c *cnpgv1.Cluster, spec *dbspec.Spec) (bool, []*cnpgv1.Pooler, error) {
	poolers, err := r.poolersOf(ctx, c)
	if err != nil {
		return false, nil, err
	}
	names := poolerDNSNames(poolers, r.Options.Domain)
	var want clusterspec.Slice
	var ownCA []byte // issuer mode: the issuer's CA chain; else read from the Cluster's own client CA Secret
	// Issuer mode: every certificate is asked for in the same pass, so
	// cert-manager issues them side by side, not one wait after another.
	var issuing []error
	if spec.ClientIssuer != nil {
		s, err := r.ensureCertificate(ctx, c, certs.ReplicationCertificate(c, *spec.ClientIssuer, objectLabels(c)))
		if err == nil {
			want.Certs.ReplicationTLSSecret, ownCA = s.Name, certs.IssuerChain(s.Data["ca.crt"], s.Data["tls.crt"])
		}
		issuing = append(issuing, err)
		_, err = r.ensurePoolerCertificate(ctx, c, *spec)
		issuing = append(issuing, err)
	}
	if spec.ServerIssuer != nil {
		s, err := r.ensureCertificate(ctx, c, certs.ServerCertificate(c, *spec.ServerIssuer, r.Options.Domain, names, objectLabels(c)))
		if err == nil {
			want.Certs.ServerTLSSecret, want.Certs.ServerCASecret = s.Name, s.Name
		}
		issuing = append(issuing, err)
	} else if !userServerTLS(c) {
		want.AltDNSNames = names // CNPG's own server certificate then names the Poolers too
	}
	if err := firstNotWaiting(issuing); err != nil {
		return false, nil, err
	}
	bundle, err := r.ensureBundle(ctx, c, ownCA)
	if err != nil {
		return false, nil, err
	}
	want.Certs.ClientCASecret = bundle.Name
	if err := r.ensureRoles(ctx, c, *spec); err != nil {
		return false, nil, err
	}
	autoHBA, err := r.autoUsers(ctx, c, spec)
	if err != nil {
		return false, nil, err
	}
	registered, err := r.ensurePoolers(ctx, c, *spec, poolers, bundle, serverTLSName(c, want.Certs))
	if err != nil {
		return false, nil, err
	}
	want.HBA = []string{pgrules.HBALine(spec.ReadRole, spec.WriteRole)}
	if len(registered) > 0 { // PgBouncer's certificate may log in as the roles
		want.HBA = []string{pgrules.MappedHBALine(spec.ReadRole, spec.WriteRole)}
		want.Ident = pgrules.IdentLines(spec.ReadRole, spec.WriteRole)
	}
	if autoHBA {
		want.HBA = append(want.HBA, pgrules.AutoUsersHBALine())
	}
	if !clusterspec.Trusted(c, want) {
		// The join first: its wait says more than "pg-2 not ready", and it
		// may make c the live copy, whose status is then the one checked.
		if err := r.notDuringJoin(ctx, c, clusterspec.Trust(c, want), "SwitchCertificates", "switched"); err != nil {
			return false, nil, err
		}
		if err := r.notWhileStarting(c, "SwitchCertificates", "switched"); err != nil {
			return false, nil, err
		}
		patch := client.MergeFromWithOptions(c.DeepCopy(), client.MergeFromWithOptimisticLock{})
		next := clusterspec.Trust(c, want)
		if err := r.Client.Patch(ctx, next, patch); err != nil {
			return false, nil, fmt.Errorf("cluster trust slice: %w", err)
		}
		*c = *next
		r.Recorder.Eventf(c, nil, corev1.EventTypeNormal, ReasonTrustConfigured, "Trust",
			"client CA %s (own CA + Teleport's), pg_hba %q, roles %s and %s, %d Pooler(s) (%d registered)", bundle.Name, want.HBA[0], spec.ReadRole, spec.WriteRole, len(poolers), len(registered))
	}
	st := c.Status
	if st.Certificates.ClientCASecret != bundle.Name || st.SecretsResourceVersion.ClientCASecretVersion != bundle.ResourceVersion ||
		(want.Certs.ServerTLSSecret != "" && st.Certificates.ServerTLSSecret != want.Certs.ServerTLSSecret) ||
		(want.Certs.ReplicationTLSSecret != "" && st.Certificates.ReplicationTLSSecret != want.Certs.ReplicationTLSSecret) {
		if r.pendingFor(c.UID) >= trustNoteAfter {
			r.warned.note(r.Recorder, c, ReasonTrustPending, "Register",
				"registration waits until CNPG runs client CA %s version %s (status: %q version %q)",
				bundle.Name, bundle.ResourceVersion, st.Certificates.ClientCASecret, st.SecretsResourceVersion.ClientCASecretVersion)
		}
		return false, nil, nil
	}
	r.pending.forget(c.UID)
	return true, registered, nil
}

// firstNotWaiting returns the first error of errs that does not wait for
// cert-manager, else the first that does, else nil.
func firstNotWaiting(errs []error) error {
	var waiting error
	for _, err := range errs {
		switch {
		case err == nil:
		case !errors.Is(err, errWaiting):
			return err
		case waiting == nil:
			waiting = err
		}
	}
	return waiting
}

// switchesJoinCertificates reports whether going from c to next changes a
// certificate a joining replica has already loaded: the server certificate
// and its CA (the replica verifies the primary with it) or the replication
// certificate (the primary verifies the replica with the client CA that
// goes with it). CNPG's join Job reads them once, at its start, and retries
// with them for ever: switched under it, it never joins (seen in CI: the
// Cluster stuck in "Creating a new replica", x509 unknown authority).
func switchesJoinCertificates(c, next *cnpgv1.Cluster) bool {
	var a, b cnpgv1.CertificatesConfiguration
	if c.Spec.Certificates != nil {
		a = *c.Spec.Certificates
	}
	if next.Spec.Certificates != nil {
		b = *next.Spec.Certificates
	}
	return a.ServerTLSSecret != b.ServerTLSSecret || a.ServerCASecret != b.ServerCASecret || a.ReplicationTLSSecret != b.ReplicationTLSSecret
}

// notWhileStarting returns errWaiting while an instance of c may be
// starting. CNPG v1.30.0's instance manager writes changed certificate and
// pg_hba files in every pass, but reloads PostgreSQL only in a pass that
// finds it up and ready (instance_controller.go: the IsReady and IsDBUp
// returns come before the Reload): files written while PostgreSQL starts
// are never loaded, and that instance keeps the old server certificate,
// client CA and pg_hba until it restarts (seen in make test: after a switch
// during a replica's start, TestIssuerMode's replica still served CNPG's own
// server certificate a minute later).
//
// Starting is any instance CNPG counts (status.instanceNames: one per PVC
// group, from initdb or join on) whose Pod it does not report ready or
// failed: a Pod running but not ready ("replicating"), and one created but
// not in the status yet (the status lags the Pods; the window the first
// check, on "replicating" alone, left open). A failed instance does not hold
// the switch back: it never reloads, and its next Pod starts on the new
// files. A hibernated Cluster (CNPG's cnpg.io/hibernation: on) runs no
// Pod, and each starts on the new files when it resumes. The patch that
// follows carries the resourceVersion of the status read here (optimistic
// lock), so a status change in between is a conflict, not a switch.
// The same holds going back (opt-out: restored), where a starting instance
// would keep trusting Teleport's CA.
func (r *ClusterReconciler) notWhileStarting(c *cnpgv1.Cluster, action, done string) error {
	if c.Annotations[cnpgHibernation] == "on" {
		return nil
	}
	starting := startingInstances(&c.Status)
	if len(starting) == 0 {
		return nil
	}
	r.warned.note(r.Recorder, c, ReasonTrustPending, action,
		"certificates and pg_hba %s once no instance is starting (%s not ready): CNPG reloads PostgreSQL only on a ready instance, and one starting would keep the old ones", done, strings.Join(starting, ", "))
	return fmt.Errorf("certificates not %s: %w: %s starting", done, errWaiting, strings.Join(starting, ", "))
}

// cnpgHibernation is CNPG's annotation that hibernates a Cluster ("on"):
// its Pods are deleted, its PVCs (instances) kept.
const cnpgHibernation = "cnpg.io/hibernation"

// startingInstances are the instances of st neither ready nor failed, in
// status order: those CNPG reports replicating, then those it counts without
// a Pod status.
func startingInstances(st *cnpgv1.ClusterStatus) []string {
	seen := map[string]bool{}
	for _, s := range []cnpgv1.PodStatus{cnpgv1.PodHealthy, cnpgv1.PodFailed} {
		for _, n := range st.InstancesStatus[s] {
			seen[n] = true
		}
	}
	var out []string
	for _, n := range append(slices.Clone(st.InstancesStatus[cnpgv1.PodReplicating]), st.InstanceNames...) {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

// notDuringJoin returns errWaiting while CNPG creates a replica, when going
// from c to next would switch the certificates its join Job has loaded.
// Otherwise c becomes the live copy read to know it, so the optimistic lock
// of the patch that follows fails if CNPG starts a join in between (it
// records the phase before it creates the Job).
func (r *ClusterReconciler) notDuringJoin(ctx context.Context, c, next *cnpgv1.Cluster, action, done string) error {
	if !switchesJoinCertificates(c, next) {
		return nil
	}
	var live cnpgv1.Cluster
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(c), &live); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	if live.Status.Phase == cnpgv1.PhaseCreatingReplica {
		// Its own action: client-go folds Events of one reason and action
		// into a series that shows the first note.
		r.warned.note(r.Recorder, c, ReasonTrustPending, action,
			"certificates %s once CNPG has created its replica (%s): a join under way would not trust the new ones", done, live.Status.PhaseReason)
		return fmt.Errorf("certificates not %s: %w: creating a replica", done, errWaiting)
	}
	*c = live
	return nil
}

// bundleInputs digests what a bundle is built from and the bundle as it is.
func bundleInputs(cur, own *corev1.Secret, cas [][]byte) [sha256.Size]byte {
	h := sha256.New()
	for _, part := range append([][]byte{[]byte(cur.UID), []byte(cur.ResourceVersion), own.Data["ca.crt"], own.Data["ca.key"]}, cas...) {
		_, _ = fmt.Fprintf(h, "%d:", len(part))
		_, _ = h.Write(part)
	}
	var out [sha256.Size]byte
	copy(out[:], h.Sum(nil))
	return out
}

// trustNoteAfter: CNPG reports a new client CA within seconds; only a wait
// longer than this is worth a TrustPending Event (the usual one is not).
const trustNoteAfter = 5 * time.Second

// byCluster holds a value per Cluster UID, safe across concurrent passes
// (never two passes of one Cluster at once: controller-runtime's workqueue).
type byCluster[T any] struct {
	mu sync.Mutex
	m  map[k8stypes.UID]T
}

func (b *byCluster[T]) get(uid k8stypes.UID) (T, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v, ok := b.m[uid]
	return v, ok
}

func (b *byCluster[T]) set(uid k8stypes.UID, v T) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = map[k8stypes.UID]T{}
	}
	b.m[uid] = v
}

func (b *byCluster[T]) forget(uid k8stypes.UID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.m, uid)
}

// pendingFor is how long c has waited for CNPG, starting at its first call.
func (r *ClusterReconciler) pendingFor(uid k8stypes.UID) time.Duration {
	since, ok := r.pending.get(uid)
	if !ok {
		since = r.now()
		r.pending.set(uid, since)
	}
	return r.now().Sub(since)
}

// userServerTLS reports whether the user gave the Cluster a server
// certificate of their own (CNPG then rejects serverAltDNSNames).
func userServerTLS(c *cnpgv1.Cluster) bool {
	if c.Spec.Certificates == nil || c.Spec.Certificates.ServerTLSSecret == "" {
		return false
	}
	return c.Spec.Certificates.ServerTLSSecret != certs.ServerSecretName(c)
}

// ensureCertificate creates or updates a cert-manager Certificate we own
// and returns its Secret once cert-manager has issued it (else errWaiting:
// the Cluster is pointed at nothing that does not exist yet).
func (r *ClusterReconciler) ensureCertificate(ctx context.Context, c *cnpgv1.Cluster, want *cmapi.Certificate) (*corev1.Secret, error) {
	var have cmapi.Certificate
	err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(want), &have)
	switch {
	case apierrors.IsNotFound(err):
		if err := r.Client.Create(ctx, want); err != nil {
			return nil, fmt.Errorf("certificate %s: %w", want.Name, err)
		}
		return nil, fmt.Errorf("certificate %s: %w: created", want.Name, errWaiting)
	case err != nil:
		return nil, fmt.Errorf("certificate %s: %w", want.Name, err)
	case !ownedBy(&have, c):
		r.warned.warn(r.Recorder, c, ReasonObjectConflict, "Trust", "Certificate %s exists and is not ours: left untouched", want.Name)
		return nil, fmt.Errorf("certificate %s: %w", want.Name, errNotOurs)
	case !apiequality.Semantic.DeepEqual(have.Spec, want.Spec):
		have.Spec = want.Spec
		if err := r.Client.Update(ctx, &have); err != nil {
			return nil, fmt.Errorf("certificate %s: %w", want.Name, err)
		}
		return nil, fmt.Errorf("certificate %s: %w: updated", want.Name, errWaiting)
	}
	ready := false
	for _, cond := range have.Status.Conditions {
		ready = ready || (cond.Type == cmapi.CertificateConditionReady && cond.Status == cmmeta.ConditionTrue && cond.ObservedGeneration == have.Generation)
	}
	var s corev1.Secret
	if ready {
		err = r.APIReader.Get(ctx, k8stypes.NamespacedName{Namespace: c.Namespace, Name: want.Spec.SecretName}, &s)
	}
	if !ready || err != nil || len(s.Data["tls.crt"]) == 0 || len(s.Data["ca.crt"]) == 0 {
		r.warned.note(r.Recorder, c, ReasonTrustPending, "Trust", "waiting for cert-manager to issue %s", want.Name)
		return nil, fmt.Errorf("certificate %s: %w: not issued yet", want.Name, errWaiting)
	}
	return &s, nil
}

// ensureBundle writes the bundle Secret when its content changed, and returns
// it. The Cluster's own client CA comes first, with its key byte for byte;
// Teleport's CA certificates follow. When Teleport cannot be asked, an
// existing bundle is kept as it is: a CA already trusted is never dropped
// for want of an answer.
func (r *ClusterReconciler) ensureBundle(ctx context.Context, c *cnpgv1.Cluster, issuerCA []byte) (*corev1.Secret, error) {
	var cur corev1.Secret
	key := k8stypes.NamespacedName{Namespace: c.Namespace, Name: BundleSecretName(c)}
	// Secrets' metadata is cached (never their data): one the cache does not
	// know is created without a read first; a create that meets one anyway
	// (the cache trails) fails the pass, and the next one reads it.
	meta := &metav1.PartialObjectMetadata{}
	meta.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	err := r.Client.Get(ctx, key, meta)
	if err == nil {
		err = r.APIReader.Get(ctx, key, &cur)
	}
	exists := err == nil
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("secret %s: %w", key, err)
	}
	if exists && !ownedBy(&cur, c) {
		r.warned.warn(r.Recorder, c, ReasonObjectConflict, "Trust", "Secret %s exists and is not ours: left untouched, nothing configured", key)
		return nil, fmt.Errorf("secret %s: %w", key, errNotOurs)
	}
	var own corev1.Secret
	ownKey := k8stypes.NamespacedName{Namespace: c.Namespace, Name: clusterspec.OwnClientCASecret(c, key.Name)}
	if issuerCA != nil { // issuer mode: the issuer's CA, no key (nobody holds it)
		own.Data = map[string][]byte{"ca.crt": issuerCA}
	} else if err := r.getSecret(ctx, ownKey, &own); err != nil {
		if apierrors.IsNotFound(err) { // CNPG makes <cluster>-ca soon after the Cluster
			r.warned.note(r.Recorder, c, ReasonTrustPending, "Trust", "waiting for the Cluster's client CA %s", ownKey)
			return nil, fmt.Errorf("the Cluster's client CA %s: %w", ownKey, errWaiting)
		}
		return nil, fmt.Errorf("the Cluster's client CA %s: %w", ownKey, err)
	}
	cas, err := r.databaseClientCAs(ctx)
	if err != nil {
		if exists {
			r.warned.warn(r.Recorder, c, ReasonTeleportUnavailable, "Trust", "Teleport's CA not refreshed, the bundle stays as it is: %v", err)
			return &cur, nil
		}
		return nil, r.unavailable(c, "Trust", err)
	}
	inputs := bundleInputs(&cur, &own, cas)
	if last, ok := r.bundles.get(c.UID); exists && ok && last == inputs {
		return &cur, nil // checked with these very inputs before: equal
	}
	prev := certs.PreviousOwnCA(cur.Data["ca.crt"], cur.Data[certs.PreviousKey], own.Data["ca.crt"], r.now())
	if prev != nil {
		cas = append(cas, prev) // the renewed own CA's predecessor, until it expires
	}
	crt, err := certs.ClientCABundle(own.Data["ca.crt"], cas)
	if err == nil && len(own.Data["ca.key"]) > 0 {
		err = certs.CheckSigningKey(crt, own.Data["ca.key"])
	}
	if err != nil {
		r.warned.warn(r.Recorder, c, ReasonTrustInvalid, "Trust", "client-CA bundle from %s not built: %v", ownKey, err)
		return nil, fmt.Errorf("bundle: %w", err)
	}
	want := certs.BundleSecret(c, key.Name, crt, own.Data["ca.key"], objectLabels(c))
	if own.Data["ca.key"] == nil {
		delete(want.Data, "ca.key")
	}
	if prev != nil {
		want.Data[certs.PreviousKey] = prev
	}
	if !exists {
		if err := r.Client.Create(ctx, want); err != nil {
			return nil, fmt.Errorf("secret %s: %w", key, err)
		}
		return want, nil
	}
	if secretEqual(&cur, want) {
		if prev == nil { // no predecessor carried: the result does not depend on the time
			r.bundles.set(c.UID, inputs)
		}
		return &cur, nil
	}
	next := cur.DeepCopy()
	next.Data, next.Labels, next.Type = want.Data, mergeLabels(cur.Labels, want.Labels), want.Type
	if err := r.Client.Update(ctx, next); err != nil {
		return nil, fmt.Errorf("secret %s: %w", key, err)
	}
	return next, nil
}

func secretEqual(cur, want *corev1.Secret) bool {
	if len(cur.Data) != len(want.Data) {
		return false
	}
	for k, v := range want.Data {
		if !bytes.Equal(cur.Data[k], v) {
			return false
		}
	}
	for k, v := range want.Labels {
		if cur.Labels[k] != v {
			return false
		}
	}
	return true
}

func mergeLabels(a, b map[string]string) map[string]string {
	out := maps.Clone(a)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, b)
	return out
}

// ensureRoles makes the read and write DatabaseRoles, and deletes ours of
// earlier role names (the auto-users admin is autoUsers' to handle).
func (r *ClusterReconciler) ensureRoles(ctx context.Context, c *cnpgv1.Cluster, spec dbspec.Spec) error {
	var list cnpgv1.DatabaseRoleList
	if err := r.Client.List(ctx, &list, client.InNamespace(c.Namespace), client.MatchingLabels(objectLabels(c))); err != nil {
		return fmt.Errorf("databaseroles: %w", err)
	}
	var want []*cnpgv1.DatabaseRole
	for _, role := range clusterspec.Roles(spec.ReadRole, spec.WriteRole) {
		want = append(want, clusterspec.DatabaseRole(c, role, objectLabels(c)))
	}
	for i := range list.Items {
		have := &list.Items[i]
		if ownedBy(have, c) && have.Spec.Name != pgrules.AdminUser && !slices.ContainsFunc(want, func(w *cnpgv1.DatabaseRole) bool { return w.Name == have.Name }) {
			if err := r.Client.Delete(ctx, have); client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("databaserole %s: %w", have.Name, err)
			}
		}
	}
	for _, w := range want {
		if _, err := r.ensureRole(ctx, c, w); err != nil {
			return err
		}
	}
	return nil
}

// ensureRole creates or updates one DatabaseRole of ours and returns it as
// the server has it.
func (r *ClusterReconciler) ensureRole(ctx context.Context, c *cnpgv1.Cluster, w *cnpgv1.DatabaseRole) (*cnpgv1.DatabaseRole, error) {
	var have cnpgv1.DatabaseRole
	err := r.Client.Get(ctx, client.ObjectKeyFromObject(w), &have)
	if apierrors.IsNotFound(err) {
		// The cache holds only ours: create, and one of our name that is
		// not ours (or not cached yet) answers AlreadyExists: read it.
		if err = r.Client.Create(ctx, w); err == nil {
			return w, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("databaserole %s: %w", w.Name, err)
		}
		err = r.APIReader.Get(ctx, client.ObjectKeyFromObject(w), &have)
	}
	switch {
	case err != nil:
		return nil, fmt.Errorf("databaserole %s: %w", w.Name, err)
	case !ownedBy(&have, c):
		r.warned.warn(r.Recorder, c, ReasonObjectConflict, "Trust", "DatabaseRole %s exists and is not ours: left untouched", w.Name)
		return nil, fmt.Errorf("databaserole %s: %w", w.Name, errNotOurs)
	}
	// Compare what we set, over what CNPG's webhook defaults.
	next := clusterspec.MergeDatabaseRole(have.Spec, w.Spec)
	if !apiequality.Semantic.DeepEqual(have.Spec, next) {
		have.Spec = next
		if err := r.Client.Update(ctx, &have); err != nil {
			return nil, fmt.Errorf("databaserole %s: %w", w.Name, err)
		}
	}
	return &have, nil
}

// untrust undoes the trust step on a Cluster that opted out: the Cluster's
// slice first, so CNPG goes back to the user's certificates before ours
// disappear, then our DatabaseRoles, Certificates, their Secrets and the
// bundle. A deleted Cluster takes its owned objects along by garbage
// collection; only the Secrets cert-manager wrote (not owned) are deleted.
func (r *ClusterReconciler) untrust(ctx context.Context, c *cnpgv1.Cluster) error {
	if err := r.restorePoolers(ctx, c); err != nil {
		return err
	}
	if !c.DeletionTimestamp.IsZero() {
		return r.deleteIssued(ctx, c)
	}
	if clusterspec.Changed(c) {
		if err := r.notDuringJoin(ctx, c, clusterspec.Restore(c), "RestoreCertificates", "restored"); err != nil {
			return err
		}
		if err := r.notWhileStarting(c, "RestoreCertificates", "restored"); err != nil {
			return err
		}
		patch := client.MergeFromWithOptions(c.DeepCopy(), client.MergeFromWithOptimisticLock{})
		next := clusterspec.Restore(c)
		if err := r.Client.Patch(ctx, next, patch); err != nil {
			return fmt.Errorf("cluster restore: %w", err)
		}
		*c = *next
		r.Recorder.Eventf(c, nil, corev1.EventTypeNormal, ReasonTrustRemoved, "Untrust", "certificates and pg_hba restored; roles and bundle removed")
	}
	// The admin is disabled and let go (never dropped with what it owns) first.
	if done, err := r.disableAutoUsers(ctx, c); err != nil || !done {
		if err == nil {
			err = fmt.Errorf("auto-users admin: %w: CNPG has not disabled it yet", errWaiting)
		}
		return err
	}
	var list cnpgv1.DatabaseRoleList
	if err := r.Client.List(ctx, &list, client.InNamespace(c.Namespace), client.MatchingLabels(objectLabels(c))); err != nil {
		return fmt.Errorf("databaseroles: %w", err)
	}
	for i := range list.Items {
		if ownedBy(&list.Items[i], c) {
			if err := r.Client.Delete(ctx, &list.Items[i]); client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("databaserole %s: %w", list.Items[i].Name, err)
			}
		}
	}
	if st := c.Status.Certificates; st.ClientCASecret == BundleSecretName(c) || st.ReplicationTLSSecret == certs.ReplicationSecretName(c) ||
		st.ServerTLSSecret == certs.ServerSecretName(c) {
		// Deleted before CNPG has left them, ours would leave CNPG without certificates.
		return fmt.Errorf("restore: %w: CNPG still runs cnpg-teleport's certificates", errWaiting)
	}
	if err := r.deleteIssued(ctx, c); err != nil {
		return err
	}
	var bundle corev1.Secret
	key := k8stypes.NamespacedName{Namespace: c.Namespace, Name: BundleSecretName(c)}
	if err := r.APIReader.Get(ctx, key, &bundle); err != nil {
		return client.IgnoreNotFound(err)
	}
	if !ownedBy(&bundle, c) {
		return nil
	}
	uid := bundle.UID
	if err := r.Client.Delete(ctx, &bundle, client.Preconditions{UID: &uid}); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("secret %s: %w", key, err)
	}
	return nil
}

// deleteIssued deletes our cert-manager Certificates and the Secrets
// cert-manager wrote for them (labelled ours through the secret template;
// cert-manager does not delete them, nor do they carry an owner reference).
func (r *ClusterReconciler) deleteIssued(ctx context.Context, c *cnpgv1.Cluster) error {
	for _, pair := range [][2]string{
		{certs.ReplicationSecretName(c), certs.ReplicationSecretName(c)},
		{certs.ServerSecretName(c), certs.ServerSecretName(c)},
		{certs.PoolerCertificateName(c), certs.PoolerSecretName(c)},
	} {
		name := pair[1]
		key := k8stypes.NamespacedName{Namespace: c.Namespace, Name: name}
		var crt cmapi.Certificate
		err := r.APIReader.Get(ctx, k8stypes.NamespacedName{Namespace: c.Namespace, Name: pair[0]}, &crt)
		switch {
		case apierrors.IsNotFound(err) || meta.IsNoMatchError(err):
		case err != nil:
			return fmt.Errorf("certificate %s: %w", name, err)
		case ownedBy(&crt, c):
			if err := r.Client.Delete(ctx, &crt); client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("certificate %s: %w", name, err)
			}
		}
		var s corev1.Secret
		if err := r.APIReader.Get(ctx, key, &s); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return fmt.Errorf("secret %s: %w", name, err)
		}
		if l := s.Labels; l[dbspec.LabelManagedBy] != dbspec.ManagedByValue || l[dbspec.LabelCluster] != c.Name {
			continue
		}
		uid := s.UID
		if err := r.Client.Delete(ctx, &s, client.Preconditions{UID: &uid}); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("secret %s: %w", name, err)
		}
	}
	return nil
}
