package world

import (
	"context"
	"fmt"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// CreateCA makes a CA with the real cert-manager: a selfSigned Issuer, a CA
// Certificate (secret <name>) and a CA Issuer <name> that signs with it. It
// returns the CA Secret once cert-manager has written it.
func (w *World) CreateCA(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	selfSigned := &cmapi.Issuer{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name + "-selfsigned"},
		Spec:       cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{SelfSigned: &cmapi.SelfSignedIssuer{}}},
	}
	if err := w.Client.Create(ctx, selfSigned); err != nil {
		return nil, err
	}
	ca := &cmapi.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: cmapi.CertificateSpec{
			IsCA:       true,
			CommonName: name,
			SecretName: name,
			PrivateKey: &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256},
			IssuerRef:  cmmeta.IssuerReference{Kind: cmapi.IssuerKind, Name: selfSigned.Name},
		},
	}
	secret, err := w.IssueCertificate(ctx, ca)
	if err != nil {
		return nil, err
	}
	issuer := &cmapi.Issuer{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec:       cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{CA: &cmapi.CAIssuer{SecretName: name}}},
	}
	if err := w.Client.Create(ctx, issuer); err != nil {
		return nil, err
	}
	return secret, nil
}

// IssueCertificate creates a cert-manager Certificate and waits until it is
// Ready, returning its Secret.
func (w *World) IssueCertificate(ctx context.Context, cert *cmapi.Certificate) (*corev1.Secret, error) {
	if err := w.Client.Create(ctx, cert); err != nil {
		return nil, err
	}
	return w.WaitCertificate(ctx, cert.Namespace, cert.Name, 60*time.Second)
}

// WaitCertificate waits until the Certificate is Ready and returns its Secret.
func (w *World) WaitCertificate(ctx context.Context, namespace, name string, timeout time.Duration) (*corev1.Secret, error) {
	var secret corev1.Secret
	err := waitFor(timeout, 50*time.Millisecond, func() error {
		var c cmapi.Certificate
		if err := w.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, &c); err != nil {
			return err
		}
		ready := false
		for _, cond := range c.Status.Conditions {
			if cond.Type == cmapi.CertificateConditionReady && cond.Status == cmmeta.ConditionTrue && cond.ObservedGeneration == c.Generation {
				ready = true
			}
		}
		if !ready {
			return fmt.Errorf("certificate %s/%s not ready: %+v", namespace, name, c.Status.Conditions)
		}
		return w.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: c.Spec.SecretName}, &secret)
	})
	return &secret, err
}
