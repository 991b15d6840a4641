package controllers

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
)

// passSecrets holds the Secrets one pass read, so a Secret the pass needs
// twice (by default the Cluster's own client CA and its server CA are one
// Secret, <cluster>-ca) costs one request. Secrets are never cached across
// passes: each pass reads them fresh.
// A pass runs in one goroutine: no lock.
type passSecrets struct {
	read map[k8stypes.NamespacedName]*corev1.Secret
}

type passSecretsKey struct{}

// withPassSecrets starts a pass's Secret reads.
func withPassSecrets(ctx context.Context) context.Context {
	return context.WithValue(ctx, passSecretsKey{}, &passSecrets{read: map[k8stypes.NamespacedName]*corev1.Secret{}})
}

// getSecret reads a Secret directly from the apiserver, once per pass.
func (r *ClusterReconciler) getSecret(ctx context.Context, key k8stypes.NamespacedName, s *corev1.Secret) error {
	memo, _ := ctx.Value(passSecretsKey{}).(*passSecrets)
	if got, ok := memo.get(key); ok {
		got.DeepCopyInto(s)
		return nil
	}
	if err := r.APIReader.Get(ctx, key, s); err != nil {
		return err
	}
	if memo != nil {
		memo.read[key] = s.DeepCopy()
	}
	return nil
}

func (p *passSecrets) get(key k8stypes.NamespacedName) (*corev1.Secret, bool) {
	if p == nil {
		return nil, false
	}
	s, ok := p.read[key]
	return s, ok
}
