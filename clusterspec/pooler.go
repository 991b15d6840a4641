package clusterspec

import (
	"slices"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"

	"github.com/cnpg-teleport/cnpg-teleport/pgrules"
)

// AnnotationInputs, on a Pooler of an opted-in Cluster, is a digest of the
// TLS material PgBouncer reads (the Cluster's client-CA bundle and server
// certificate). CNPG's Pooler controller does not watch those Secrets, so a
// changed bundle never reaches PgBouncer by itself (shared/notes/cnpg.md);
// changing this annotation is a Pooler event, on which CNPG's PgBouncer
// instance manager re-reads its Secrets and reloads. Not a rollout: CNPG's
// Deployment hash covers only the Pooler's spec.
const AnnotationInputs = "cnpg-teleport.io/tls-inputs"

// PoolerDNSNames are the names of a Pooler's Service (CNPG names it after
// the Pooler), as svc, svc.ns, svc.ns.svc and svc.ns.svc.<domain>.
func PoolerDNSNames(p *cnpgv1.Pooler, domain string) []string {
	svc := p.Name
	return []string{svc, svc + "." + p.Namespace, svc + "." + p.Namespace + ".svc", svc + "." + p.Namespace + ".svc." + domain}
}

// TrustPooler returns the Pooler with the inputs digest set and, for a
// registered Pooler (hbaLine not empty), our PgBouncer hba line first among
// the user's; a Pooler no longer registered loses the line.
func TrustPooler(p *cnpgv1.Pooler, inputs, hbaLine string) *cnpgv1.Pooler {
	out := p.DeepCopy()
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	out.Annotations[AnnotationInputs] = inputs
	if out.Spec.PgBouncer == nil {
		out.Spec.PgBouncer = &cnpgv1.PgBouncerSpec{}
	}
	if hbaLine != "" {
		out.Spec.PgBouncer.PgHBA = pgrules.MergeHBA(out.Spec.PgBouncer.PgHBA, hbaLine)
	} else {
		out.Spec.PgBouncer.PgHBA = pgrules.StripHBA(out.Spec.PgBouncer.PgHBA)
	}
	if p.Spec.PgBouncer == nil && len(out.Spec.PgBouncer.PgHBA) == 0 {
		out.Spec.PgBouncer = nil
	}
	return out
}

// PoolerTrusted reports whether TrustPooler would change nothing.
func PoolerTrusted(p *cnpgv1.Pooler, inputs, hbaLine string) bool {
	next := TrustPooler(p, inputs, hbaLine)
	return apiequality.Semantic.DeepEqual(next.Spec, p.Spec) && p.Annotations[AnnotationInputs] == inputs
}

// RestorePooler removes the digest and our hba line; everything else stays.
func RestorePooler(p *cnpgv1.Pooler) *cnpgv1.Pooler {
	out := p.DeepCopy()
	delete(out.Annotations, AnnotationInputs)
	if len(out.Annotations) == 0 {
		out.Annotations = nil
	}
	if out.Spec.PgBouncer != nil {
		out.Spec.PgBouncer.PgHBA = pgrules.StripHBA(out.Spec.PgBouncer.PgHBA)
	}
	return out
}

// PoolerChanged reports whether the Pooler has any of our slice.
func PoolerChanged(p *cnpgv1.Pooler) bool {
	_, ok := p.Annotations[AnnotationInputs]
	return ok || (p.Spec.PgBouncer != nil && slices.ContainsFunc(p.Spec.PgBouncer.PgHBA, pgrules.Ours))
}
