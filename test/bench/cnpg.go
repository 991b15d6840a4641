package bench

import (
	"context"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// statusWriter plays the one part of CNPG the controller waits for, since a
// thousand real CNPG Clusters cannot run on this machine: once a Cluster's
// spec.certificates.clientCASecret names a Secret, it reports that Secret
// and its resourceVersion in status.certificates.clientCASecret and
// status.secretsResourceVersion.clientCaSecretVersion, as CNPG does once
// its instances run that client CA (cnpg.md). It writes only when the
// status differs, so it adds nothing to an idle cluster. Like CNPG's
// operator it reads from its informers (the Secret's metadata is enough
// here): only its status writes reach the apiserver.
type statusWriter struct {
	c     client.Client
	cache cache.Cache
	queue workqueue.TypedRateLimitingInterface[types.NamespacedName]
}

func startStatusWriter(ctx context.Context, informers cache.Cache, c client.Client, workers int) error {
	s := &statusWriter{c: c, cache: informers, queue: workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[types.NamespacedName]())}
	inf, err := informers.GetInformer(ctx, &cnpgv1.Cluster{})
	if err != nil {
		return err
	}
	if _, err := informers.GetInformer(ctx, secretMeta()); err != nil {
		return err
	}
	enqueue := func(o any) {
		if cl, ok := o.(*cnpgv1.Cluster); ok && s.behind(cl) {
			s.queue.Add(client.ObjectKeyFromObject(cl))
		}
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, n any) { enqueue(n) },
	}); err != nil {
		return err
	}
	go func() { <-ctx.Done(); s.queue.ShutDown() }()
	for range workers {
		go s.work(ctx)
	}
	return nil
}

// behind: the spec names a client CA that the status does not report yet.
func (s *statusWriter) behind(c *cnpgv1.Cluster) bool {
	return c.Spec.Certificates != nil && c.Spec.Certificates.ClientCASecret != "" &&
		c.Status.Certificates.ClientCASecret != c.Spec.Certificates.ClientCASecret
}

func (s *statusWriter) work(ctx context.Context) {
	for {
		key, shutdown := s.queue.Get()
		if shutdown {
			return
		}
		if err := s.write(ctx, key); err != nil && ctx.Err() == nil {
			s.queue.AddRateLimited(key)
		} else {
			s.queue.Forget(key)
		}
		s.queue.Done(key)
	}
}

func (s *statusWriter) write(ctx context.Context, key types.NamespacedName) error {
	var c cnpgv1.Cluster
	if err := s.cache.Get(ctx, key, &c); err != nil {
		return client.IgnoreNotFound(err)
	}
	if c.Spec.Certificates == nil || c.Spec.Certificates.ClientCASecret == "" {
		return nil
	}
	ca := secretMeta()
	if err := s.cache.Get(ctx, types.NamespacedName{Namespace: c.Namespace, Name: c.Spec.Certificates.ClientCASecret}, ca); err != nil {
		return err // not in the informer yet too: again, with backoff
	}
	if c.Status.Certificates.ClientCASecret == ca.Name && c.Status.SecretsResourceVersion.ClientCASecretVersion == ca.ResourceVersion {
		return nil
	}
	c.Status.Certificates.ClientCASecret = ca.Name
	c.Status.SecretsResourceVersion.ClientCASecretVersion = ca.ResourceVersion
	// A stale cached Cluster answers Conflict: again, with backoff.
	if err := s.c.Status().Update(ctx, &c); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}
	return nil
}

func secretMeta() *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	return m
}
