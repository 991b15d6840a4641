package bench

import (
	"context"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
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
// status differs, so it adds nothing to an idle cluster.
type statusWriter struct {
	c     client.Client
	queue workqueue.TypedRateLimitingInterface[types.NamespacedName]
}

func startStatusWriter(ctx context.Context, informers cache.Cache, c client.Client, workers int) error {
	s := &statusWriter{c: c, queue: workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[types.NamespacedName]())}
	inf, err := informers.GetInformer(ctx, &cnpgv1.Cluster{})
	if err != nil {
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
	if err := s.c.Get(ctx, key, &c); err != nil {
		return client.IgnoreNotFound(err)
	}
	if c.Spec.Certificates == nil || c.Spec.Certificates.ClientCASecret == "" {
		return nil
	}
	var ca corev1.Secret
	if err := s.c.Get(ctx, types.NamespacedName{Namespace: c.Namespace, Name: c.Spec.Certificates.ClientCASecret}, &ca); err != nil {
		return client.IgnoreNotFound(err)
	}
	if c.Status.Certificates.ClientCASecret == ca.Name && c.Status.SecretsResourceVersion.ClientCASecretVersion == ca.ResourceVersion {
		return nil
	}
	c.Status.Certificates.ClientCASecret = ca.Name
	c.Status.SecretsResourceVersion.ClientCASecretVersion = ca.ResourceVersion
	if err := s.c.Status().Update(ctx, &c); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}
	return nil
}
