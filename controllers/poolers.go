package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnpg-teleport/cnpg-teleport/certs"
	"github.com/cnpg-teleport/cnpg-teleport/clusterspec"
	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
	"github.com/cnpg-teleport/cnpg-teleport/pgrules"
)

// Event reasons, on Poolers.
const (
	ReasonPoolerConfigured    = "PoolerConfigured"
	ReasonPoolerUntrusted     = "PoolerUntrusted"
	ReasonPoolerNotRegistered = "PoolerNotRegistered"
)

// poolersOf lists the Poolers of c (from the cache), by name.
func (r *ClusterReconciler) poolersOf(ctx context.Context, c *cnpgv1.Cluster) ([]cnpgv1.Pooler, error) {
	var list cnpgv1.PoolerList
	if err := r.Client.List(ctx, &list, client.InNamespace(c.Namespace)); err != nil {
		return nil, fmt.Errorf("poolers: %w", err)
	}
	out := slices.DeleteFunc(list.Items, func(p cnpgv1.Pooler) bool { return p.Spec.Cluster.Name != c.Name })
	slices.SortFunc(out, func(a, b cnpgv1.Pooler) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// poolerDNSNames are every Pooler's Service names: the Cluster's server
// certificate, which PgBouncer presents to its clients, must carry them for
// verify-full.
func poolerDNSNames(poolers []cnpgv1.Pooler, domain string) []string {
	var out []string
	for i := range poolers {
		out = append(out, clusterspec.PoolerDNSNames(&poolers[i], domain)...)
	}
	return out
}

// unregistrable says why a Pooler that asks to be registered cannot be
// reached by a Teleport user ("" when it can): the path is Teleport ->
// PgBouncer (cert hba, client CA = the bundle, server certificate = the
// Cluster's) -> PostgreSQL as the role with CNPG's <cluster>-pooler
// certificate, which the Cluster's pg_ident map lets in as the roles.
func unregistrable(p *cnpgv1.Pooler, bundle string) string {
	pb := p.Spec.PgBouncer
	switch {
	case pb == nil:
		return ""
	case pb.ClientCASecret != nil && pb.ClientCASecret.Name != "" && pb.ClientCASecret.Name != bundle:
		return fmt.Sprintf("spec.pgbouncer.clientCASecret %s replaces the Cluster's client-CA bundle %s: PgBouncer would not trust Teleport's certificates; remove the field", pb.ClientCASecret.Name, bundle)
	case pb.ClientTLSSecret != nil && pb.ClientTLSSecret.Name != "":
		return fmt.Sprintf("spec.pgbouncer.clientTLSSecret %s: Teleport verifies PgBouncer (verify-full) against the Cluster's server CA and the Pooler's Service name, which only the Cluster's server certificate is made to carry; remove the field", pb.ClientTLSSecret.Name)
	case !p.IsAutomatedIntegration():
		return "spec.pgbouncer sets authQuery, authQuerySecret or serverTLSSecret: a Teleport user reaches PostgreSQL through PgBouncer only on CNPG's automated integration (PgBouncer logs in with the <cluster>-pooler certificate, CN cnpg_pooler_pgbouncer); remove them"
	}
	return ""
}

// untrusted says how a Pooler's own TLS override cannot work against the
// bundle ("" when it can): PostgreSQL checks PgBouncer's client certificate
// against the bundle alone.
func (r *ClusterReconciler) untrusted(ctx context.Context, p *cnpgv1.Pooler, bundle *corev1.Secret, issuerMode bool) (string, error) {
	pb := p.Spec.PgBouncer
	if pb == nil {
		return "", nil
	}
	fix := "sign it with the Cluster's client CA"
	if issuerMode {
		fix = "sign it with the client issuer"
	}
	for _, f := range []struct {
		field string
		ref   *cnpgv1.LocalObjectReference
	}{{"serverTLSSecret", pb.ServerTLSSecret}, {"authQuerySecret", pb.AuthQuerySecret}} {
		if f.ref == nil || f.ref.Name == "" {
			continue
		}
		var s corev1.Secret
		err := r.APIReader.Get(ctx, k8stypes.NamespacedName{Namespace: p.Namespace, Name: f.ref.Name}, &s)
		if apierrors.IsNotFound(err) {
			continue // CNPG reports a missing Secret in the Pooler's status
		}
		if err != nil {
			return "", fmt.Errorf("secret %s: %w", f.ref.Name, err)
		}
		if len(s.Data[corev1.TLSCertKey]) == 0 {
			continue // a password Secret: PostgreSQL does not check a certificate
		}
		if err := certs.VerifyClient(s.Data[corev1.TLSCertKey], bundle.Data["ca.crt"], r.now()); err != nil {
			return fmt.Sprintf("spec.pgbouncer.%s %s is not trusted by the Cluster's client-CA bundle %s (%v): PostgreSQL will refuse PgBouncer; %s, or remove the field and let CNPG's automated integration use <cluster>-pooler",
				f.field, f.ref.Name, bundle.Name, err, fix), nil
		}
	}
	return "", nil
}

// tlsInputs is the digest of what PgBouncer reads and CNPG's Pooler
// controller does not watch: the bundle and the server certificate.
func tlsInputs(bundle, serverTLS []byte) string {
	h := sha256.New()
	h.Write(bundle)
	h.Write([]byte{0})
	h.Write(serverTLS)
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// serverTLSName is the server certificate Secret CNPG runs for c.
func serverTLSName(c *cnpgv1.Cluster, want clusterspec.Certs) string {
	if want.ServerTLSSecret != "" {
		return want.ServerTLSSecret
	}
	if c.Spec.Certificates != nil && c.Spec.Certificates.ServerTLSSecret != "" {
		return c.Spec.Certificates.ServerTLSSecret
	}
	return c.Name + "-server"
}

// ensurePoolers brings every Pooler of the Cluster onto the bundle: a
// Warning for an override that cannot work, the TLS digest (so PgBouncer
// reloads), and for a registered one the PgBouncer hba line. It returns the
// Poolers registration can serve.
func (r *ClusterReconciler) ensurePoolers(ctx context.Context, c *cnpgv1.Cluster, spec dbspec.Spec, poolers []cnpgv1.Pooler,
	bundle *corev1.Secret, serverTLS string) ([]*cnpgv1.Pooler, error) {
	var st corev1.Secret
	if err := r.APIReader.Get(ctx, k8stypes.NamespacedName{Namespace: c.Namespace, Name: serverTLS}, &st); client.IgnoreNotFound(err) != nil {
		return nil, fmt.Errorf("secret %s: %w", serverTLS, err)
	}
	inputs := tlsInputs(bundle.Data["ca.crt"], st.Data[corev1.TLSCertKey])
	var registered []*cnpgv1.Pooler
	for i := range poolers {
		p := &poolers[i]
		if !p.DeletionTimestamp.IsZero() {
			continue
		}
		problem, err := r.untrusted(ctx, p, bundle, spec.ClientIssuer != nil)
		if err != nil {
			return nil, err
		}
		if problem != "" {
			r.warned.warn(r.Recorder, p, ReasonPoolerUntrusted, "Trust", "%s", problem)
		}
		hba := ""
		if PoolerRegistered(p, spec) {
			if why := unregistrable(p, bundle.Name); why != "" {
				r.warned.warn(r.Recorder, p, ReasonPoolerNotRegistered, "Register", "not registered in Teleport: %s", why)
			} else {
				hba = pgrules.PoolerHBALine(spec.ReadRole, spec.WriteRole)
				registered = append(registered, p)
			}
		}
		if problem == "" && (hba != "" || !PoolerRegistered(p, spec)) {
			r.warned.clear(p)
		}
		if clusterspec.PoolerTrusted(p, inputs, hba) {
			continue
		}
		patch := client.MergeFromWithOptions(p.DeepCopy(), client.MergeFromWithOptimisticLock{})
		next := clusterspec.TrustPooler(p, inputs, hba)
		if err := r.Client.Patch(ctx, next, patch); err != nil {
			return nil, fmt.Errorf("pooler %s: %w", p.Name, err)
		}
		note := fmt.Sprintf("PgBouncer reloads the client-CA bundle %s and server certificate %s (digest %s)", bundle.Name, serverTLS, inputs)
		if hba != "" {
			note += "; Teleport's hba line: " + hba
		}
		r.Recorder.Eventf(next, nil, corev1.EventTypeNormal, ReasonPoolerConfigured, "Trust", "%s", note)
		*p = *next
	}
	return registered, nil
}

// poolersWithoutCluster warns on each Pooler that asks to be registered
// while its Cluster has not opted in (nothing of it is registered: the
// Cluster's annotation decides, a Pooler's alone widens nothing).
func (r *ClusterReconciler) poolersWithoutCluster(ctx context.Context, c *cnpgv1.Cluster) error {
	poolers, err := r.poolersOf(ctx, c)
	if err != nil {
		return err
	}
	for i := range poolers {
		if p := &poolers[i]; p.Annotations[dbspec.AnnotationRegister] == "true" && p.DeletionTimestamp.IsZero() {
			r.warned.warn(r.Recorder, p, ReasonPoolerNotRegistered, "Register",
				"not registered in Teleport: its Cluster %s has not opted in (annotate the Cluster %s: \"true\" first)", c.Name, dbspec.AnnotationRegister)
		}
	}
	return nil
}

// restorePoolers undoes ensurePoolers on every Pooler of the Cluster.
func (r *ClusterReconciler) restorePoolers(ctx context.Context, c *cnpgv1.Cluster) error {
	poolers, err := r.poolersOf(ctx, c)
	if err != nil {
		return err
	}
	for i := range poolers {
		p := &poolers[i]
		if !clusterspec.PoolerChanged(p) {
			continue
		}
		patch := client.MergeFromWithOptions(p.DeepCopy(), client.MergeFromWithOptimisticLock{})
		if err := r.Client.Patch(ctx, clusterspec.RestorePooler(p), patch); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("pooler %s: %w", p.Name, err)
		}
		r.warned.clear(p)
	}
	return nil
}

// ensurePoolerCertificate issues, in issuer mode, <cluster>-pooler through
// cert-manager and makes it the Cluster's (controller owner reference, as
// CNPG's own): CNPG then counts the Pooler integration as its own (it creates
// the cnpg_pooler_pgbouncer role and user_search), never signs it (it renews
// only within 7 days of expiry; cert-manager renews 30 days before), and
// the garbage collector deletes it with the Cluster. A <cluster>-pooler
// someone else made is left alone. It reports whether the Secret is ready.
func (r *ClusterReconciler) ensurePoolerCertificate(ctx context.Context, c *cnpgv1.Cluster, spec dbspec.Spec) (bool, error) {
	key := k8stypes.NamespacedName{Namespace: c.Namespace, Name: certs.PoolerSecretName(c)}
	var cur corev1.Secret
	err := r.APIReader.Get(ctx, key, &cur)
	if err != nil && !apierrors.IsNotFound(err) {
		return false, fmt.Errorf("secret %s: %w", key, err)
	}
	if err == nil && cur.Labels[dbspec.LabelManagedBy] != dbspec.ManagedByValue && !metav1.IsControlledBy(&cur, c) {
		r.warned.warn(r.Recorder, c, ReasonObjectConflict, "Trust",
			"Secret %s exists and is neither CNPG's nor ours: left untouched (CNPG treats it as a manual Pooler integration)", key)
		return false, nil
	}
	s, err := r.ensureCertificate(ctx, c, certs.PoolerCertificate(c, *spec.ClientIssuer, objectLabels(c)))
	if err != nil {
		return false, err
	}
	if metav1.IsControlledBy(s, c) {
		return true, nil
	}
	for i := range s.OwnerReferences { // a Secret has one controller: CNPG must see the Cluster as it
		s.OwnerReferences[i].Controller = nil
	}
	s.OwnerReferences = append(s.OwnerReferences, metav1.OwnerReference{APIVersion: cnpgv1.SchemeGroupVersion.String(), Kind: cnpgv1.ClusterKind, Name: c.Name, UID: c.UID, Controller: ptr(true)})
	if err := r.Client.Update(ctx, s); err != nil {
		return false, fmt.Errorf("secret %s: %w", key, err)
	}
	return true, nil
}

func ptr[T any](v T) *T { return &v }
