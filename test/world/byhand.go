package world

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// TrustByHand does for one Cluster what platform teams do by hand today
// (shared/seeds/teleport-cnpg-by-hand.md), until the controller automates it:
//   - a client-CA Secret <cluster>-trusted-ca whose ca.crt is the Cluster's
//     own client CA (CNPG's <cluster>-ca) first, then extraCAs (Teleport's
//     database-client CA), with CNPG's ca.key unchanged so CNPG keeps issuing
//     its client certificates, labelled cnpg.io/reload so CNPG picks changes up;
//   - spec.certificates.clientCASecret pointed at it;
//   - a `hostssl all <user> all cert` pg_hba line and a login role per user.
//
// CNPG applies all of it; the world never touches PostgreSQL itself. It
// returns once CNPG reports the new client CA and the roles reconciled.
func (w *World) TrustByHand(ctx context.Context, namespace, cluster string, extraCAs []byte, users ...string) error {
	var own corev1.Secret
	key := types.NamespacedName{Namespace: namespace, Name: cluster + "-ca"}
	if err := waitFor(time.Minute, 100*time.Millisecond, func() error { return w.Client.Get(ctx, key, &own) }); err != nil {
		return fmt.Errorf("CNPG's client CA %s: %w", key, err)
	}
	bundle := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: cluster + "-trusted-ca", Labels: map[string]string{"cnpg.io/reload": "true"}},
		Data: map[string][]byte{
			"ca.crt": append(append(bytes.TrimRight(own.Data["ca.crt"], "\n"), '\n'), extraCAs...),
			"ca.key": own.Data["ca.key"],
		},
	}
	if err := w.Client.Create(ctx, bundle); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	err := w.UpdateCluster(ctx, namespace, cluster, func(c *cnpgv1.Cluster) {
		if c.Spec.Certificates == nil {
			c.Spec.Certificates = &cnpgv1.CertificatesConfiguration{}
		}
		c.Spec.Certificates.ClientCASecret = bundle.Name
		for _, u := range users {
			if line := "hostssl all " + u + " all cert"; !slices.Contains(c.Spec.PostgresConfiguration.PgHBA, line) {
				c.Spec.PostgresConfiguration.PgHBA = append(c.Spec.PostgresConfiguration.PgHBA, line)
			}
			if c.Spec.Managed == nil {
				c.Spec.Managed = &cnpgv1.ManagedConfiguration{}
			}
			if !slices.ContainsFunc(c.Spec.Managed.Roles, func(r cnpgv1.RoleConfiguration) bool { return r.Name == u }) {
				c.Spec.Managed.Roles = append(c.Spec.Managed.Roles, cnpgv1.RoleConfiguration{Name: u, Ensure: cnpgv1.EnsurePresent, Login: true})
			}
		}
	})
	if err != nil {
		return err
	}
	return waitFor(2*time.Minute, 200*time.Millisecond, func() error {
		var c cnpgv1.Cluster
		if err := w.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: cluster}, &c); err != nil {
			return err
		}
		if c.Status.Certificates.ClientCASecret != bundle.Name {
			return fmt.Errorf("CNPG reports client CA %q", c.Status.Certificates.ClientCASecret)
		}
		for _, u := range users {
			if !slices.Contains(c.Status.ManagedRolesStatus.ByStatus[cnpgv1.RoleStatusReconciled], u) {
				return fmt.Errorf("role %s not reconciled yet: %v", u, c.Status.ManagedRolesStatus.ByStatus)
			}
		}
		return nil
	})
}

// UpdateCluster applies mutate to the live Cluster, retrying on conflicts only.
func (w *World) UpdateCluster(ctx context.Context, namespace, name string, mutate func(*cnpgv1.Cluster)) error {
	for {
		var c cnpgv1.Cluster
		if err := w.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, &c); err != nil {
			return err
		}
		mutate(&c)
		err := w.Client.Update(ctx, &c)
		if !apierrors.IsConflict(err) {
			return err
		}
	}
}
