package controllers

// envtest-level tests: a real kube-apiserver and etcd serving the real CNPG
// and cert-manager CRDs of the pinned modules, a real manager running the
// ClusterReconciler and the OrphanCollector (Setup), and the Teleport fake.
// CNPG's operator does not run: the test plays its part where the controller
// waits on it (the <cluster>-ca Secret, and the status reporting the client
// CA it runs). Every wait polls an observable (the fake's state, Events, the
// orphan-pass metric), bounded.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	"github.com/go-logr/logr"
	"github.com/gravitational/teleport/api/types"
	"github.com/gravitational/trace"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	k8stypes "k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
	"github.com/cnpg-teleport/cnpg-teleport/pgrules"
	"github.com/cnpg-teleport/cnpg-teleport/teleport"
	"github.com/cnpg-teleport/cnpg-teleport/teleport/teleporttest"
	"github.com/cnpg-teleport/cnpg-teleport/test/world"
)

// The apiserver is shared by the package's envtest tests (started on first
// use, stopped by TestMain); each test has its own namespaces and manager.
var (
	envOnce sync.Once
	env     *envtest.Environment
	envCfg  *rest.Config
	envErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if env != nil {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "envtest stop:", err)
		}
	}
	os.Exit(code)
}

func envScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, cnpgv1.AddToScheme, cmapi.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}

// startEnv returns the shared apiserver's config. Its binaries come from
// KUBE_APISERVER_DIR and ETCD_DIR (make test and make race set them):
// missing, the test fails saying so rather than skipping unseen.
func startEnv(t *testing.T) *rest.Config {
	t.Helper()
	envOnce.Do(func() {
		apiDir, etcdDir := os.Getenv("KUBE_APISERVER_DIR"), os.Getenv("ETCD_DIR")
		if apiDir == "" || etcdDir == "" {
			envErr = errors.New("envtest needs KUBE_APISERVER_DIR and ETCD_DIR (the directories of kube-apiserver and etcd): " +
				"run `make test` or `make race`, or set them to the output of `hack/tools.sh kube-apiserver` and `hack/tools.sh etcd`")
			return
		}
		dirs, err := world.CRDDirs()
		if err != nil {
			envErr = err
			return
		}
		ctrllog.SetLogger(logr.Discard())
		env = &envtest.Environment{
			ControlPlane: envtest.ControlPlane{
				APIServer: &envtest.APIServer{Path: filepath.Join(apiDir, "kube-apiserver")},
				Etcd:      &envtest.Etcd{Path: filepath.Join(etcdDir, "etcd")},
			},
			CRDDirectoryPaths:        dirs,
			ErrorIfCRDPathMissing:    true,
			ControlPlaneStartTimeout: 90 * time.Second,
			Scheme:                   envScheme(),
		}
		envCfg, envErr = env.Start()
	})
	if envErr != nil {
		t.Fatalf("envtest: %v", envErr)
	}
	return envCfg
}

// bed is one test's world: its namespace(s), a direct client, the fake
// Teleport, and a running manager.
type bed struct {
	t  *testing.T
	c  client.Client // direct, uncached
	ns string
	f  *teleporttest.Fake
}

// bedOptions tune a bed.
type bedOptions struct {
	// resync is the manager's resync and orphan period (default 2 s).
	resync time.Duration
	// unwatched are extra namespaces made but not watched by the manager.
	unwatched int
	// silentCNPG: nobody reports the client CA in the status (CNPG stuck).
	silentCNPG bool
}

var nsSeq int

func newBed(t *testing.T, o bedOptions) (*bed, []string) {
	t.Helper()
	cfg := startEnv(t)
	if o.resync == 0 {
		o.resync = 2 * time.Second
	}
	c, err := client.New(cfg, client.Options{Scheme: envScheme()})
	if err != nil {
		t.Fatal(err)
	}
	var namespaces []string
	for range o.unwatched + 1 {
		nsSeq++
		ns := fmt.Sprintf("%s-%d", strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")), nsSeq)
		ns = strings.Trim(ns[max(len(ns)-60, 0):], "-")
		if err := c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
		namespaces = append(namespaces, ns)
	}
	b := &bed{t: t, c: c, ns: namespaces[0],
		f: teleporttest.NewFake(teleporttest.FakeConfig{
			AllowedLabels: map[string]string{dbspec.LabelManagedBy: dbspec.ManagedByValue},
			DBCACerts:     [][]byte{testCA(t, "teleport-db")},
		})}

	ctx, cancel := context.WithCancel(context.Background())
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: envScheme(),
		Cache: cache.Options{
			DefaultNamespaces: map[string]cache.Config{b.ns: {}},
			ByObject: map[client.Object]cache.ByObject{ // as cmd/cnpg-teleport
				&cnpgv1.DatabaseRole{}: {Label: labels.SelectorFromSet(labels.Set{dbspec.LabelManagedBy: dbspec.ManagedByValue})},
				&cnpgv1.Database{}:     {Label: labels.SelectorFromSet(labels.Set{dbspec.LabelManagedBy: dbspec.ManagedByValue})},
			},
		},
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr(true)}, // a manager per test
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := Setup(ctx, mgr, Config{Teleport: b.f, Options: opts, Resync: o.resync, Retry: time.Second, Namespaces: []string{b.ns}}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	if !o.silentCNPG {
		go b.playCNPG(ctx)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	return b, namespaces
}

// eventually polls cond every 50 ms until it holds, failing the test after
// 30 s with cond's last report.
func (b *bed) eventually(what string, cond func() (bool, string)) {
	b.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("timed out waiting for %s (last seen: %s)", what, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// playCNPG does what CNPG's operator would for the controller to go on: it
// reports in the status the client CA Secret the spec names (or CNPG's
// own <cluster>-ca) and that Secret's resourceVersion, once it exists.
func (b *bed) playCNPG(ctx context.Context) {
	for ctx.Err() == nil {
		var list cnpgv1.ClusterList
		if err := b.c.List(ctx, &list, client.InNamespace(b.ns)); err == nil {
			for i := range list.Items {
				b.reportClientCA(ctx, &list.Items[i])
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (b *bed) reportClientCA(ctx context.Context, c *cnpgv1.Cluster) {
	name := c.Name + "-ca"
	if c.Spec.Certificates != nil && c.Spec.Certificates.ClientCASecret != "" {
		name = c.Spec.Certificates.ClientCASecret
	}
	var s corev1.Secret
	if err := b.c.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: name}, &s); err != nil {
		return
	}
	st := &c.Status
	if st.Certificates.ClientCASecret == name && st.SecretsResourceVersion.ClientCASecretVersion == s.ResourceVersion {
		return
	}
	patch := client.MergeFrom(c.DeepCopy())
	st.Certificates.ClientCASecret, st.SecretsResourceVersion.ClientCASecretVersion = name, s.ResourceVersion
	_ = b.c.Status().Patch(ctx, c, patch) // a conflict or a deleted Cluster: the next round
}

// cnpgCA is a CA as CNPG makes it: a certificate and its EC PRIVATE KEY.
func cnpgCA(t *testing.T, cn string, key *ecdsa.PrivateKey) (crt, keyPEM []byte) {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn}, IsCA: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// newCluster creates a Cluster of instances with CNPG's <name>-ca (server
// and client CA in CNPG's default), and returns it and its CA certificate.
func (b *bed) newCluster(name string, instances int, ann map[string]string) (*cnpgv1.Cluster, []byte) {
	b.t.Helper()
	ctx := context.Background()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.t.Fatal(err)
	}
	crt := b.writeCA(name, "", key)
	c := &cnpgv1.Cluster{
		ObjectMeta: metav1.ObjectMeta{Namespace: b.ns, Name: name, Annotations: ann},
		Spec:       cnpgv1.ClusterSpec{Instances: instances, StorageConfiguration: cnpgv1.StorageConfiguration{Size: "1Gi"}},
	}
	if err := b.c.Create(ctx, c); err != nil {
		b.t.Fatal(err)
	}
	return c, crt
}

// writeCA creates or renews (same key, as CNPG renews) <name>-ca.
func (b *bed) writeCA(name, cn string, key *ecdsa.PrivateKey) []byte {
	b.t.Helper()
	ctx := context.Background()
	if cn == "" {
		cn = name
	}
	crt, k := cnpgCA(b.t, cn, key)
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: b.ns, Name: name + "-ca"}}
	_, err := ctrl.CreateOrUpdate(ctx, b.c, s, func() error {
		s.Data = map[string][]byte{"ca.crt": crt, "ca.key": k}
		return nil
	})
	if err != nil {
		b.t.Fatal(err)
	}
	return crt
}

// caKey reads the key of <name>-ca back, to renew it with the same key.
func (b *bed) caKey(name string) *ecdsa.PrivateKey {
	b.t.Helper()
	var s corev1.Secret
	if err := b.c.Get(context.Background(), client.ObjectKey{Namespace: b.ns, Name: name + "-ca"}, &s); err != nil {
		b.t.Fatal(err)
	}
	blk, _ := pem.Decode(s.Data["ca.key"])
	key, err := x509.ParseECPrivateKey(blk.Bytes)
	if err != nil {
		b.t.Fatal(err)
	}
	return key
}

// stored reports the fake's authoritative db names of the Cluster (any UID).
func (b *bed) stored(cluster string) []string {
	var out []string
	for _, n := range b.f.StoredNames() {
		if db, ok := b.f.Stored(n); ok && db.GetStaticLabels()[dbspec.LabelNamespace] == b.ns && db.GetStaticLabels()[dbspec.LabelCluster] == cluster {
			out = append(out, n)
		}
	}
	return out
}

func (b *bed) waitDBs(cluster string, want ...string) {
	b.t.Helper()
	slices.Sort(want)
	b.eventually(fmt.Sprintf("db resources %v of %s", want, cluster), func() (bool, string) {
		got := b.stored(cluster)
		return slices.Equal(got, want), fmt.Sprint(got)
	})
}

// event waits for an Event of reason on the object name whose note contains part.
func (b *bed) event(name, reason, part string) {
	b.t.Helper()
	b.eventually(fmt.Sprintf("Event %s %q on %s", reason, part, name), func() (bool, string) {
		var list eventsv1.EventList
		if err := b.c.List(context.Background(), &list, client.InNamespace(b.ns)); err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, e := range list.Items {
			if e.Regarding.Name == name && e.Reason == reason && strings.Contains(e.Note, part) {
				return true, ""
			}
			seen = append(seen, e.Reason+": "+e.Note)
		}
		return false, fmt.Sprint(seen)
	})
}

func (b *bed) get(name string) (*cnpgv1.Cluster, error) {
	var c cnpgv1.Cluster
	err := b.c.Get(context.Background(), client.ObjectKey{Namespace: b.ns, Name: name}, &c)
	return &c, err
}

// patchCluster changes the Cluster with mutate, retrying on conflicts.
func (b *bed) patchCluster(name string, mutate func(*cnpgv1.Cluster)) {
	b.t.Helper()
	b.eventually("a patch of "+name, func() (bool, string) {
		c, err := b.get(name)
		if err != nil {
			return false, err.Error()
		}
		patch := client.MergeFromWithOptions(c.DeepCopy(), client.MergeFromWithOptimisticLock{})
		mutate(c)
		err = b.c.Patch(context.Background(), c, patch)
		return err == nil, fmt.Sprint(err)
	})
}

func (b *bed) waitGone(name string) {
	b.t.Helper()
	b.eventually(name+" gone", func() (bool, string) {
		c, err := b.get(name)
		if err == nil {
			return false, fmt.Sprintf("finalizers %v", c.Finalizers)
		}
		return apierrors.IsNotFound(err), err.Error()
	})
}

func orphanPassCount(t *testing.T) float64 {
	t.Helper()
	var m dto.Metric
	if err := orphanPasses.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// waitOrphanPasses waits until n more orphan passes have completed.
func (b *bed) waitOrphanPasses(n int) {
	b.t.Helper()
	start := orphanPassCount(b.t)
	b.eventually(fmt.Sprintf("%d orphan passes", n), func() (bool, string) {
		got := orphanPassCount(b.t) - start
		return got >= float64(n), fmt.Sprint(got)
	})
}

func registerAnn() map[string]string { return map[string]string{dbspec.AnnotationRegister: "true"} }

// registered creates a Cluster and waits until its db resources are registered.
func (b *bed) registered(name string, instances int, want ...string) (*cnpgv1.Cluster, []byte) {
	b.t.Helper()
	c, ca := b.newCluster(name, instances, registerAnn())
	b.waitDBs(name, want...)
	return c, ca
}

func dbName(ns, name, ep string) string {
	spec, err := ParseAnnotations(opts, cluster(ns, name, 1, registerAnn()))
	if err != nil {
		panic(err)
	}
	return spec.DBName(ep)
}

// TestEnvRegistration: CNPG's default <cluster>-ca server CA, the watches,
// opt-out and deletion, through the real apiserver.
func TestEnvRegistration(t *testing.T) {
	b, _ := newBed(t, bedOptions{resync: time.Hour}) // no resync hides a missing watch
	rw, ro := dbName(b.ns, "pg", "rw"), dbName(b.ns, "pg", "ro")
	_, ca := b.registered("pg", 2, rw, ro)
	for _, n := range []string{rw, ro} {
		db, _ := b.f.Stored(n)
		if db.GetTLS().CACert != string(ca) || db.GetTLS().Mode != types.DatabaseTLSMode_VERIFY_FULL {
			t.Fatalf("%s: tls %+v, want verify-full against pg-ca's ca.crt", n, db.GetTLS())
		}
	}
	b.event("pg", ReasonRegistered, "")
	if n := b.count("pg", ReasonTrustPending); n != 0 {
		t.Fatalf("%d TrustPending Events: CNPG reported within a second, nobody needs to hear about the wait", n)
	}
	c, _ := b.get("pg")
	if !slices.Contains(c.Finalizers, Finalizer) {
		t.Fatalf("finalizers %v", c.Finalizers)
	}

	// CNPG renews pg-ca (same key): the Secret watch brings the new ca.crt.
	renewed := b.writeCA("pg", "pg-renewed", b.caKey("pg"))
	b.eventually("tls.ca_cert = the renewed pg-ca", func() (bool, string) {
		db, _ := b.f.Stored(rw)
		return db != nil && db.GetTLS().CACert == string(renewed), ""
	})

	// The annotation removed: deregistered, the finalizer gone, the spec the user's.
	b.patchCluster("pg", func(c *cnpgv1.Cluster) { delete(c.Annotations, dbspec.AnnotationRegister) })
	b.waitDBs("pg")
	b.eventually("finalizer removed", func() (bool, string) {
		c, err := b.get("pg")
		return err == nil && !slices.Contains(c.Finalizers, Finalizer) && c.Spec.Certificates == nil, fmt.Sprint(err, c.Finalizers)
	})
	b.event("pg", ReasonDeregistered, "") // one series per reason and action: the first note stays

	// A deleted Cluster is deregistered, and its finalizer lets it go.
	b.registered("one", 1, dbName(b.ns, "one", "rw"))
	if err := b.c.Delete(context.Background(), &cnpgv1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: b.ns, Name: "one"}}); err != nil {
		t.Fatal(err)
	}
	b.waitGone("one")
	b.waitDBs("one")
}

// TestEnvTrustPendingWhenCNPGIsSilent: a Cluster whose client CA CNPG does
// not report gets a TrustPending Event (after trustNoteAfter) and no db
// resource.
func TestEnvTrustPendingWhenCNPGIsSilent(t *testing.T) {
	b, _ := newBed(t, bedOptions{resync: time.Hour, silentCNPG: true})
	b.newCluster("pg", 1, registerAnn())
	b.event("pg", ReasonTrustPending, "registration waits until CNPG runs client CA pg-teleport-ca")
	if got := b.stored("pg"); len(got) != 0 {
		t.Fatalf("registered %v before CNPG runs the bundle", got)
	}
}

// count is the number of Events of reason on the object name.
func (b *bed) count(name, reason string) int {
	var list eventsv1.EventList
	if err := b.c.List(context.Background(), &list, client.InNamespace(b.ns)); err != nil {
		b.t.Fatal(err)
	}
	n := 0
	for _, e := range list.Items {
		if e.Regarding.Name == name && e.Reason == reason {
			n++
		}
	}
	return n
}

// TestEnvInvalidKeepAtDeletion: keep "True" is not guessed at: the deletion
// waits with an InvalidAnnotation Warning, the finalizer and the db stay,
// until the annotation is fixed.
func TestEnvInvalidKeepAtDeletion(t *testing.T) {
	b, _ := newBed(t, bedOptions{})
	rw := dbName(b.ns, "pg", "rw")
	b.registered("pg", 1, rw)
	b.patchCluster("pg", func(c *cnpgv1.Cluster) { c.Annotations[dbspec.AnnotationKeep] = "True" })
	if err := b.c.Delete(context.Background(), &cnpgv1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: b.ns, Name: "pg"}}); err != nil {
		t.Fatal(err)
	}
	b.event("pg", ReasonInvalidAnnotation, "deregistration waits")
	if c, err := b.get("pg"); err != nil || !slices.Contains(c.Finalizers, Finalizer) {
		t.Fatalf("the Cluster went (%v) or lost its finalizer", err)
	}
	if got := b.stored("pg"); !slices.Equal(got, []string{rw}) {
		t.Fatalf("db resources %v, want %s left as it was", got, rw)
	}
	b.patchCluster("pg", func(c *cnpgv1.Cluster) { c.Annotations[dbspec.AnnotationKeep] = "false" })
	b.waitGone("pg")
	b.waitDBs("pg")
}

// TestEnvKeepAndOptOutInOneEdit: keep set and register dropped in one edit;
// the reconciler's keep-label write is held until two orphan passes have run
// on the edited Cluster: they must leave its db resources alone.
func TestEnvKeepAndOptOutInOneEdit(t *testing.T) {
	b, _ := newBed(t, bedOptions{resync: time.Second})
	rw := dbName(b.ns, "pg", "rw")
	b.registered("pg", 1, rw)
	var once sync.Once
	b.f.SetHook(func(c teleporttest.Call) error {
		if c.Method == "UpdateDatabase" {
			once.Do(func() {
				start, deadline := orphanPassCount(t), time.Now().Add(30*time.Second)
				for orphanPassCount(t) < start+2 {
					if time.Now().After(deadline) {
						t.Error("no two orphan passes in 30 s")
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
			})
		}
		return nil
	})
	b.patchCluster("pg", func(c *cnpgv1.Cluster) {
		delete(c.Annotations, dbspec.AnnotationRegister)
		c.Annotations[dbspec.AnnotationKeep] = "true"
	})
	b.event("pg", ReasonKept, "")
	db, ok := b.f.Stored(rw)
	if !ok || !dbspec.Kept(db) {
		t.Fatalf("%s: stored %v, kept label %v; want it kept", rw, ok, ok && dbspec.Kept(db))
	}
}

// TestEnvUnwatchedNamespace: a db resource whose Cluster is in a namespace
// the controller does not watch is neither deleted nor counted.
func TestEnvUnwatchedNamespace(t *testing.T) {
	b, namespaces := newBed(t, bedOptions{resync: time.Second, unwatched: 1})
	other := cluster(namespaces[1], "pg", 1, registerAnn())
	dbs, err := DesiredDatabases(opts, other, testCA(t, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.f.Put(dbs[0]); err != nil {
		t.Fatal(err)
	}
	b.waitOrphanPasses(2)
	if _, ok := b.f.Stored(dbs[0].GetName()); !ok {
		t.Fatal("the db resource of an unwatched namespace was deleted")
	}
	var m dto.Metric
	if err := registered.Write(&m); err != nil {
		t.Fatal(err)
	}
	if v := m.GetGauge().GetValue(); v != 0 {
		t.Fatalf("cnpg_teleport_registered_databases = %v, want 0 (an unwatched namespace's db is not ours to count)", v)
	}
}

// TestEnvDeleteWithinReadLag: a Cluster deleted right after registering,
// while Teleport's reads do not show the new db resources yet, takes them
// along in the same pass (the orphan collector does not run in this test).
func TestEnvDeleteWithinReadLag(t *testing.T) {
	b, _ := newBed(t, bedOptions{resync: time.Hour})
	b.f.SetReadLag(2) // the rw and ro creates stay invisible to reads
	rw, ro := dbName(b.ns, "pg", "rw"), dbName(b.ns, "pg", "ro")
	b.registered("pg", 2, rw, ro)
	if dbs, _ := b.f.ListDatabases(context.Background()); len(dbs) != 0 {
		t.Fatalf("reads show %d db resources, want a stale, empty list", len(dbs))
	}
	if err := b.c.Delete(context.Background(), &cnpgv1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: b.ns, Name: "pg"}}); err != nil {
		t.Fatal(err)
	}
	b.waitGone("pg")
	if got := b.stored("pg"); len(got) != 0 {
		t.Fatalf("left in Teleport when the finalizer went: %v", got)
	}
}

// afterList is a Teleport view that runs fn once after the first List.
type afterList struct {
	Teleport
	once *sync.Once
	fn   func()
}

func (a afterList) ListDatabases(ctx context.Context) ([]teleport.DatabaseMeta, error) {
	dbs, err := a.Teleport.ListDatabases(ctx)
	a.once.Do(a.fn)
	return dbs, err
}

// TestEnvRecreatedClusterTakenOverDuringCollection: the escape hatch (the
// finalizer stripped while Teleport is down), then the Cluster re-created
// under its name and taken over by the reconciler between the collector's
// List and its Delete: the collector must leave it.
func TestEnvRecreatedClusterTakenOverDuringCollection(t *testing.T) {
	ctx := context.Background()
	b, _ := newBed(t, bedOptions{resync: time.Hour}) // only the test's own collection
	rw := dbName(b.ns, "pg", "rw")
	old, _ := b.registered("pg", 1, rw)

	down := trace.ConnectionProblem(errors.New("refused"), "teleport is down")
	b.f.SetError("ListDatabases", down)
	b.f.SetError("GetDatabase", down)
	if err := b.c.Delete(ctx, old); err != nil {
		t.Fatal(err)
	}
	b.event("pg", ReasonTeleportUnavailable, "remove the finalizer")
	b.patchCluster("pg", func(c *cnpgv1.Cluster) {
		c.Finalizers = slices.DeleteFunc(c.Finalizers, func(f string) bool { return f == Finalizer })
	})
	b.waitGone("pg")
	b.f.SetError("ListDatabases", nil)
	b.f.SetError("GetDatabase", nil)
	b.collectGarbage(old.UID) // no kube-controller-manager here

	var recreated *cnpgv1.Cluster
	o := &OrphanCollector{Client: nil, APIReader: b.c, Options: opts, Namespaces: []string{b.ns}}
	o.Client = b.c // the cache's view is the apiserver's here: the fix must hold even so
	o.Teleport = afterList{Teleport: b.f, once: &sync.Once{}, fn: func() {
		recreated = &cnpgv1.Cluster{
			ObjectMeta: metav1.ObjectMeta{Namespace: b.ns, Name: "pg", Annotations: registerAnn()},
			Spec:       cnpgv1.ClusterSpec{Instances: 1, StorageConfiguration: cnpgv1.StorageConfiguration{Size: "1Gi"}},
		}
		if err := b.c.Create(ctx, recreated); err != nil {
			t.Error(err)
			return
		}
		b.eventually("the re-created Cluster takes its db resource over", func() (bool, string) {
			db, ok := b.f.Stored(rw)
			return ok && db.GetStaticLabels()[dbspec.LabelClusterUID] == string(recreated.UID), ""
		})
	}}
	n, err := o.Collect(ctx)
	if err != nil || n != 0 {
		t.Fatalf("collect: %d deleted, %v", n, err)
	}
	db, ok := b.f.Stored(rw)
	if !ok || db.GetStaticLabels()[dbspec.LabelClusterUID] != string(recreated.UID) {
		t.Fatalf("%s: stored %v; want it the re-created Cluster's", rw, ok)
	}
}

// collectGarbage deletes what the garbage collector would once the Cluster
// of uid is gone: the Secrets and DatabaseRoles it owns.
func (b *bed) collectGarbage(uid k8stypes.UID) {
	b.t.Helper()
	ctx := context.Background()
	owned := func(o metav1.Object) bool {
		return slices.ContainsFunc(o.GetOwnerReferences(), func(r metav1.OwnerReference) bool { return r.UID == uid })
	}
	var secrets corev1.SecretList
	var roles cnpgv1.DatabaseRoleList
	if err := b.c.List(ctx, &secrets, client.InNamespace(b.ns)); err != nil {
		b.t.Fatal(err)
	}
	if err := b.c.List(ctx, &roles, client.InNamespace(b.ns)); err != nil {
		b.t.Fatal(err)
	}
	for i := range secrets.Items {
		if owned(&secrets.Items[i]) {
			if err := b.c.Delete(ctx, &secrets.Items[i]); client.IgnoreNotFound(err) != nil {
				b.t.Fatal(err)
			}
		}
	}
	for i := range roles.Items {
		if owned(&roles.Items[i]) {
			r := &roles.Items[i]
			r.Finalizers = nil
			_ = b.c.Update(ctx, r)
			if err := b.c.Delete(ctx, r); client.IgnoreNotFound(err) != nil {
				b.t.Fatal(err)
			}
		}
	}
}

// TestEnvTeleportRefused: a create Teleport refuses (the controller's role
// may not write the db) is reported as TeleportRefused, and registers once
// the refusal is lifted and the next resync comes.
func TestEnvTeleportRefused(t *testing.T) {
	b, _ := newBed(t, bedOptions{resync: time.Second})
	b.f.SetError("CreateDatabase", trace.AccessDenied("access to db denied"))
	b.newCluster("pg", 1, registerAnn())
	b.event("pg", ReasonTeleportRefused, "access to db denied")
	if got := b.stored("pg"); len(got) != 0 {
		t.Fatalf("registered despite the refusal: %v", got)
	}
	b.f.SetError("CreateDatabase", nil)
	b.waitDBs("pg", dbName(b.ns, "pg", "rw"))
}

// TestEnvObjectConflict: a DatabaseRole, or a bundle Secret, of the
// controller's name that it did not make is left untouched: an
// ObjectConflict Warning, nothing registered; once it is gone, the Cluster
// is trusted and registered.
func TestEnvObjectConflict(t *testing.T) {
	b, _ := newBed(t, bedOptions{resync: time.Hour})
	ctx := context.Background()
	role := &cnpgv1.DatabaseRole{
		ObjectMeta: metav1.ObjectMeta{Namespace: b.ns, Name: "pg-teleport-read"},
		Spec: cnpgv1.DatabaseRoleSpec{
			RoleConfiguration: cnpgv1.RoleConfiguration{Name: "teleport_read", Comment: "a person's"},
			ClusterRef:        corev1.LocalObjectReference{Name: "pg"},
		},
	}
	if err := b.c.Create(ctx, role); err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: b.ns, Name: "other-teleport-ca"}, Data: map[string][]byte{"ca.crt": []byte("mine")}}
	if err := b.c.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	b.newCluster("pg", 1, registerAnn())
	b.newCluster("other", 1, registerAnn())
	b.event("pg", ReasonObjectConflict, "DatabaseRole pg-teleport-read exists and is not ours")
	b.event("other", ReasonObjectConflict, "Secret "+b.ns+"/other-teleport-ca exists and is not ours")
	var got cnpgv1.DatabaseRole
	if err := b.c.Get(ctx, client.ObjectKeyFromObject(role), &got); err != nil || got.Spec.Comment != "a person's" || len(got.OwnerReferences) != 0 {
		t.Fatalf("the person's DatabaseRole changed: %+v %v", got.Spec, err)
	}
	var s corev1.Secret
	if err := b.c.Get(ctx, client.ObjectKeyFromObject(secret), &s); err != nil || string(s.Data["ca.crt"]) != "mine" || len(s.Data) != 1 {
		t.Fatalf("the person's Secret changed: %v %v", s.Data, err)
	}
	if got := append(b.stored("pg"), b.stored("other")...); len(got) != 0 {
		t.Fatalf("registered %v", got)
	}
	// Gone: the next pass (its deletion wakes the Cluster) goes on.
	if err := b.c.Delete(ctx, secret); err != nil {
		t.Fatal(err)
	}
	b.waitDBs("other", dbName(b.ns, "other", "rw"))
}

// TestEnvBundleFollowsItsInputs: a pass that finds the bundle as its inputs
// build it remembers them and skips the rebuild; any change of an input
// still reaches the bundle at the next resync: Teleport's CA rotated, the
// bundle edited by hand, the own CA renewed.
func TestEnvBundleFollowsItsInputs(t *testing.T) {
	b, _ := newBed(t, bedOptions{resync: 2 * time.Second})
	ctx := context.Background()
	b.registered("pg", 1, dbName(b.ns, "pg", "rw"))
	key := client.ObjectKey{Namespace: b.ns, Name: "pg-teleport-ca"}
	bundleHas := func(what string, pem []byte) {
		b.eventually("the bundle holds "+what, func() (bool, string) {
			var s corev1.Secret
			if err := b.c.Get(ctx, key, &s); err != nil {
				return false, err.Error()
			}
			return bytes.Contains(s.Data["ca.crt"], bytes.TrimSpace(pem)), string(s.Data["ca.crt"])
		})
	}
	rotated := testCA(t, "teleport-db-rotated")
	b.f.SetCACerts(types.DatabaseCA, [][]byte{rotated})
	bundleHas("Teleport's rotated CA", rotated)

	var s corev1.Secret
	if err := b.c.Get(ctx, key, &s); err != nil {
		t.Fatal(err)
	}
	s.Data["ca.crt"] = []byte("edited by hand")
	if err := b.c.Update(ctx, &s); err != nil {
		t.Fatal(err)
	}
	bundleHas("Teleport's CA again after a hand edit", rotated)

	renewed := b.writeCA("pg", "pg-renewed", b.caKey("pg"))
	bundleHas("the renewed own CA", renewed)
}

// TestBundleInputs: every input of the bundle changes its digest.
func TestBundleInputs(t *testing.T) {
	cur := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{UID: "u", ResourceVersion: "1"}}
	own := &corev1.Secret{Data: map[string][]byte{"ca.crt": []byte("crt"), "ca.key": []byte("key")}}
	cas := [][]byte{[]byte("a"), []byte("b")}
	base := bundleInputs(cur, own, cas)
	if bundleInputs(cur.DeepCopy(), own.DeepCopy(), [][]byte{[]byte("a"), []byte("b")}) != base {
		t.Fatal("the same inputs digest differently")
	}
	for name, change := range map[string]func(cur, own *corev1.Secret, cas [][]byte) [][]byte{
		"bundle version":   func(cur, _ *corev1.Secret, cas [][]byte) [][]byte { cur.ResourceVersion = "2"; return cas },
		"bundle recreated": func(cur, _ *corev1.Secret, cas [][]byte) [][]byte { cur.UID = "v"; return cas },
		"own CA":           func(_, own *corev1.Secret, cas [][]byte) [][]byte { own.Data["ca.crt"] = []byte("crt2"); return cas },
		"own key":          func(_, own *corev1.Secret, cas [][]byte) [][]byte { own.Data["ca.key"] = []byte("key2"); return cas },
		"Teleport CA":      func(_, _ *corev1.Secret, _ [][]byte) [][]byte { return [][]byte{[]byte("a"), []byte("c")} },
		"Teleport CA more": func(_, _ *corev1.Secret, cas [][]byte) [][]byte { return append(cas, []byte("c")) },
		"boundaries":       func(_, _ *corev1.Secret, _ [][]byte) [][]byte { return [][]byte{[]byte("ab")} },
	} {
		c, o := cur.DeepCopy(), own.DeepCopy()
		in := change(c, o, slices.Clone(cas))
		if bundleInputs(c, o, in) == base {
			t.Errorf("%s: the digest did not change", name)
		}
	}
}

// TestEnvNoCertificateSwitchDuringJoin: in issuer mode the server and
// replication certificates are not switched while CNPG creates a replica
// (its join Job loaded the old ones and would never join: a CI run saw the
// Cluster stuck so), and are switched once it has. cert-manager's part is
// played: each Certificate's Secret written, then its Ready condition.
func TestEnvNoCertificateSwitchDuringJoin(t *testing.T) {
	b, _ := newBed(t, bedOptions{resync: time.Hour})
	ctx := context.Background()
	ann := registerAnn()
	ann[dbspec.AnnotationClientIssuer] = "ClusterIssuer/client"
	ann[dbspec.AnnotationServerIssuer] = "ClusterIssuer/server"
	b.newCluster("pg", 2, ann)
	setPhase := func(phase, reason string) {
		b.eventually("phase "+phase, func() (bool, string) {
			c, err := b.get("pg")
			if err != nil {
				return false, err.Error()
			}
			patch := client.MergeFromWithOptions(c.DeepCopy(), client.MergeFromWithOptimisticLock{})
			c.Status.Phase, c.Status.PhaseReason = phase, reason
			err = b.c.Status().Patch(ctx, c, patch)
			return err == nil, fmt.Sprint(err)
		})
	}
	setPhase(cnpgv1.PhaseCreatingReplica, "Creating replica pg-2-join")

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := cnpgCA(t, "issuer", key)
	b.eventually("3 Certificates issued", func() (bool, string) {
		var list cmapi.CertificateList
		if err := b.c.List(ctx, &list, client.InNamespace(b.ns)); err != nil {
			return false, err.Error()
		}
		for i := range list.Items {
			crt := &list.Items[i]
			s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: b.ns, Name: crt.Spec.SecretName}}
			if _, err := ctrl.CreateOrUpdate(ctx, b.c, s, func() error {
				s.Data = map[string][]byte{"ca.crt": ca, "tls.crt": ca}
				if tmpl := crt.Spec.SecretTemplate; tmpl != nil { // as cert-manager
					s.Labels = tmpl.Labels
				}
				return nil
			}); err != nil {
				return false, err.Error()
			}
			crt.Status.Conditions = []cmapi.CertificateCondition{{Type: cmapi.CertificateConditionReady, Status: cmmeta.ConditionTrue, ObservedGeneration: crt.Generation}}
			if err := b.c.Status().Update(ctx, crt); err != nil {
				return false, err.Error()
			}
		}
		return len(list.Items) == 3, fmt.Sprint(len(list.Items))
	})
	b.event("pg", ReasonTrustPending, "switched once CNPG has created its replica (Creating replica pg-2-join)")
	switched := func() (bool, string) {
		c, err := b.get("pg")
		if err != nil {
			return false, err.Error()
		}
		cs := c.Spec.Certificates
		if cs == nil {
			return false, "no spec.certificates"
		}
		return cs.ServerTLSSecret == "pg-teleport-server" && cs.ServerCASecret == "pg-teleport-server" &&
			cs.ReplicationTLSSecret == "pg-teleport-replication" && cs.ClientCASecret == "pg-teleport-ca", fmt.Sprintf("%+v", *cs)
	}
	if ok, got := switched(); ok {
		t.Fatalf("certificates switched while CNPG creates a replica: %s", got)
	}
	setPhase(cnpgv1.PhaseHealthy, "")
	b.eventually("certificates switched once the replica is created", switched)

	// Opting out hands CNPG its own certificates back: not under a join either.
	setPhase(cnpgv1.PhaseCreatingReplica, "Creating replica pg-3-join")
	b.patchCluster("pg", func(c *cnpgv1.Cluster) { delete(c.Annotations, dbspec.AnnotationRegister) })
	b.event("pg", ReasonTrustPending, "restored once CNPG has created its replica (Creating replica pg-3-join)")
	if ok, got := switched(); !ok {
		t.Fatalf("certificates restored while CNPG creates a replica: %s", got)
	}
	setPhase(cnpgv1.PhaseHealthy, "")
	b.eventually("certificates restored once the replica is created", func() (bool, string) {
		c, err := b.get("pg")
		if err != nil {
			return false, err.Error()
		}
		return c.Spec.Certificates == nil, fmt.Sprintf("%+v", c.Spec.Certificates)
	})
}

// TestEnvNoTrustSwitchWhileAnInstanceStarts: the certificates and pg_hba are
// not switched while CNPG counts an instance that is not ready (running, or
// its Pod not in the status yet: CNPG would write its files but never reload
// it), and are switched once none is, with a TrustPending Event meanwhile;
// opting out restores them under the same rule.
func TestEnvNoTrustSwitchWhileAnInstanceStarts(t *testing.T) {
	b, _ := newBed(t, bedOptions{resync: time.Hour})
	ctx := context.Background()
	b.newCluster("pg", 2, nil)
	setStatus := func(st map[cnpgv1.PodStatus][]string) {
		b.eventually(fmt.Sprintf("instances %v", st), func() (bool, string) {
			c, err := b.get("pg")
			if err != nil {
				return false, err.Error()
			}
			patch := client.MergeFromWithOptions(c.DeepCopy(), client.MergeFromWithOptimisticLock{})
			c.Status.InstanceNames, c.Status.InstancesStatus = []string{"pg-1", "pg-2"}, st
			err = b.c.Status().Patch(ctx, c, patch)
			return err == nil, fmt.Sprint(err)
		})
	}
	setStatus(map[cnpgv1.PodStatus][]string{cnpgv1.PodHealthy: {"pg-1"}}) // pg-2's Pod not reported yet
	b.patchCluster("pg", func(c *cnpgv1.Cluster) { c.Annotations = registerAnn() })
	b.event("pg", ReasonTrustPending, "switched once no instance is starting (pg-2 not ready)")
	switched := func() (bool, string) {
		c, err := b.get("pg")
		if err != nil {
			return false, err.Error()
		}
		if cs := c.Spec.Certificates; cs == nil || cs.ClientCASecret != "pg-teleport-ca" {
			return false, fmt.Sprintf("%+v", cs)
		}
		return len(c.Spec.PostgresConfiguration.PgHBA) > 0, fmt.Sprint(c.Spec.PostgresConfiguration.PgHBA)
	}
	if ok, got := switched(); ok {
		t.Fatalf("switched while an instance starts: %s", got)
	}
	setStatus(map[cnpgv1.PodStatus][]string{cnpgv1.PodHealthy: {"pg-1", "pg-2"}})
	b.eventually("certificates and pg_hba switched once no instance starts", switched)

	// Opting out restores the Cluster, not while an instance starts either
	// (it would keep trusting Teleport's CA).
	setStatus(map[cnpgv1.PodStatus][]string{cnpgv1.PodHealthy: {"pg-1"}, cnpgv1.PodReplicating: {"pg-2"}})
	b.patchCluster("pg", func(c *cnpgv1.Cluster) { delete(c.Annotations, dbspec.AnnotationRegister) })
	b.event("pg", ReasonTrustPending, "restored once no instance is starting (pg-2 not ready)")
	if ok, got := switched(); !ok {
		t.Fatalf("restored while an instance starts: %s", got)
	}
	setStatus(map[cnpgv1.PodStatus][]string{cnpgv1.PodHealthy: {"pg-1", "pg-2"}})
	b.eventually("certificates and pg_hba restored once no instance starts", func() (bool, string) {
		c, err := b.get("pg")
		if err != nil {
			return false, err.Error()
		}
		return c.Spec.Certificates == nil && len(c.Spec.PostgresConfiguration.PgHBA) == 0,
			fmt.Sprintf("%+v %v", c.Spec.Certificates, c.Spec.PostgresConfiguration.PgHBA)
	})
}

// reconcileErrors is controller-runtime's count of failed Cluster passes
// (every manager of this package names its controller "cluster").
func reconcileErrors(t *testing.T) float64 {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range families {
		if f.GetName() != "controller_runtime_reconcile_errors_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "controller" && l.GetValue() == "cluster" {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

// TestEnvConcurrentEditsSurvive (issue 21): while the controller patches its
// slice of a Cluster, CNPG (played) writes the status every 20 ms and a user
// adds a pg_hba line and changes a parameter every 15 ms (with the optimistic
// lock, as kubectl edit): every party's fields survive (pg_hba is a list: a
// patch made from a stale copy without the lock would drop the user's newest
// line), the controller's patches that met a newer version failed and were
// retried (counted), and the Cluster is registered.
func TestEnvConcurrentEditsSurvive(t *testing.T) {
	b, _ := newBed(t, bedOptions{resync: time.Hour})
	ctx := context.Background()
	b.newCluster("pg", 2, nil)
	b.patchCluster("pg", func(c *cnpgv1.Cluster) {
		c.Spec.PostgresConfiguration.PgHBA = []string{"host all app all scram-sha-256"}
	})
	errs0 := reconcileErrors(t)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex // the writers' tallies
	var lastStatus, lastWorkMem string
	var userLines []string
	var statusWrites, userWrites, userConflicts int
	tally := func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		return statusWrites, userWrites
	}
	writer := func(every time.Duration, write func(i int) error) {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(every):
			}
			_ = write(i)
		}
	}
	wg.Add(2)
	go writer(20*time.Millisecond, func(i int) error { // CNPG: its status, a merge patch of what it changes
		c, err := b.get("pg")
		if err != nil {
			return err
		}
		patch := client.MergeFrom(c.DeepCopy())
		c.Status.PhaseReason = fmt.Sprintf("cnpg write %d", i)
		if err := b.c.Status().Patch(ctx, c, patch); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		statusWrites, lastStatus = statusWrites+1, c.Status.PhaseReason
		return nil
	})
	go writer(15*time.Millisecond, func(i int) error { // a user: the spec, with the optimistic lock
		c, err := b.get("pg")
		if err != nil {
			return err
		}
		patch := client.MergeFromWithOptions(c.DeepCopy(), client.MergeFromWithOptimisticLock{})
		if c.Spec.PostgresConfiguration.Parameters == nil {
			c.Spec.PostgresConfiguration.Parameters = map[string]string{}
		}
		c.Spec.PostgresConfiguration.Parameters["work_mem"] = fmt.Sprintf("%dkB", 4096+i)
		line := fmt.Sprintf("host all user%d all scram-sha-256", i)
		c.Spec.PostgresConfiguration.PgHBA = append(c.Spec.PostgresConfiguration.PgHBA, line)
		err = b.c.Patch(ctx, c, patch)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			userConflicts++
			return err
		}
		userWrites, lastWorkMem = userWrites+1, c.Spec.PostgresConfiguration.Parameters["work_mem"]
		userLines = append(userLines, line)
		return nil
	})
	b.patchCluster("pg", func(c *cnpgv1.Cluster) { c.Annotations = registerAnn() })
	ours := func(c *cnpgv1.Cluster) bool {
		return c.Spec.Certificates != nil && c.Spec.Certificates.ClientCASecret == "pg-teleport-ca" &&
			slices.Contains(c.Spec.PostgresConfiguration.PgHBA, pgrules.HBALine(pgrules.DefaultReadRole, pgrules.DefaultWriteRole))
	}
	b.eventually("the controller's slice in, under the writes", func() (bool, string) {
		c, err := b.get("pg")
		if err != nil {
			return false, err.Error()
		}
		return ours(c), fmt.Sprint(c.Spec.PostgresConfiguration.PgHBA)
	})
	s0, u0 := tally()
	b.eventually("more writes of each party over the slice", func() (bool, string) {
		s, u := tally()
		return s >= s0+5 && u >= u0+2, fmt.Sprintf("%d status writes, %d user edits", s-s0, u-u0)
	})
	close(stop)
	wg.Wait()

	c, err := b.get("pg")
	if err != nil {
		t.Fatal(err)
	}
	if !ours(c) {
		t.Errorf("the controller's slice lost: certificates %+v, pg_hba %q", c.Spec.Certificates, c.Spec.PostgresConfiguration.PgHBA)
	}
	for _, l := range append(userLines, "host all app all scram-sha-256") {
		if !slices.Contains(c.Spec.PostgresConfiguration.PgHBA, l) {
			t.Errorf("the user's pg_hba line %q lost", l)
		}
	}
	if got := c.Spec.PostgresConfiguration.Parameters["work_mem"]; got != lastWorkMem || lastWorkMem == "" {
		t.Errorf("the user's last edit: work_mem %q, want %q", got, lastWorkMem)
	}
	if c.Status.PhaseReason != lastStatus || lastStatus == "" {
		t.Errorf("CNPG's last status write: %q, want %q", c.Status.PhaseReason, lastStatus)
	}
	b.waitDBs("pg", dbName(b.ns, "pg", "rw"), dbName(b.ns, "pg", "ro"))
	t.Logf("%d status writes, %d user edits (%d refused by the optimistic lock), %.0f failed controller passes retried",
		statusWrites, userWrites, userConflicts, reconcileErrors(t)-errs0)
}

// TestEnvHostileObjects (issue 21): objects at the edges. A Cluster at CNPG's
// longest name (50 characters) registers under valid Teleport names; an
// annotation of Unicode and one of 200 KiB are refused with an
// InvalidAnnotation Warning, nothing applied (no finalizer, no bundle, no db);
// one over the apiserver's 256 KiB never reaches the controller; a server CA
// Secret whose ca.crt holds a private key, or garbage, registers nothing.
func TestEnvHostileObjects(t *testing.T) {
	b, _ := newBed(t, bedOptions{resync: time.Hour})
	ctx := context.Background()
	long := "a" + strings.Repeat("b", 49)
	b.registered(long, 2, dbName(b.ns, long, "rw"), dbName(b.ns, long, "ro"))
	for _, n := range b.stored(long) {
		if !validDBName(n) {
			t.Errorf("db name %q (%d characters) is not a valid Teleport db name", n, len(n))
		}
	}

	ann := func(k, v string) map[string]string { return map[string]string{dbspec.AnnotationRegister: "true", k: v} }
	for name, a := range map[string]map[string]string{
		"unicode": ann(dbspec.AnnotationName, "ünïcödé-☃"),
		"big":     ann(dbspec.AnnotationLabels, strings.Repeat("k=v,", 50_000)),
	} {
		b.newCluster(name, 1, a)
		b.event(name, ReasonInvalidAnnotation, "nothing applied")
		c, err := b.get(name)
		if err != nil {
			t.Fatal(err)
		}
		var s corev1.Secret
		if len(c.Finalizers) > 0 || len(b.stored(name)) > 0 || !apierrors.IsNotFound(b.c.Get(ctx, client.ObjectKey{Namespace: b.ns, Name: BundleSecretName(c)}, &s)) {
			t.Fatalf("%s: applied: finalizers %v, db resources %v, bundle %v", name, c.Finalizers, b.stored(name), s.Name)
		}
	}

	huge := &cnpgv1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: b.ns, Name: "huge", Annotations: ann(dbspec.AnnotationLabels, strings.Repeat("x", 1<<20))},
		Spec: cnpgv1.ClusterSpec{Instances: 1}}
	if err := b.c.Create(ctx, huge); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "annotations") {
		t.Fatalf("a 1 MiB annotation: %v, want the apiserver to refuse it", err)
	}

	for name, tc := range map[string]struct {
		crt  []byte
		says string
	}{
		"keyca":     {append(testCA(t, "x"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte("not for Teleport")})...), "a EC PRIVATE KEY block"},
		"garbageca": {[]byte("not a certificate"), "not PEM"},
	} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		b.writeCA(name, "", key)
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: b.ns, Name: name + "-ca"}}
		if _, err := ctrl.CreateOrUpdate(ctx, b.c, s, func() error { s.Data["ca.crt"] = tc.crt; return nil }); err != nil {
			t.Fatal(err)
		}
		c := &cnpgv1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: b.ns, Name: name, Annotations: registerAnn()},
			Spec: cnpgv1.ClusterSpec{Instances: 1, StorageConfiguration: cnpgv1.StorageConfiguration{Size: "1Gi"}}}
		if err := b.c.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
		note := b.warning(name)
		t.Logf("%s: %s", name, note)
		if !strings.HasPrefix(note, ReasonTrustInvalid+": ") || !strings.Contains(note, tc.says) {
			t.Fatalf("%s: Warning %q, want %s saying %q", name, note, ReasonTrustInvalid, tc.says)
		}
		if len(b.stored(name)) > 0 {
			t.Fatalf("%s: registered %v", name, b.stored(name))
		}
	}
}

// warning waits for a Warning Event on name and returns its reason and note.
func (b *bed) warning(name string) string {
	b.t.Helper()
	var got string
	b.eventually("a Warning on "+name, func() (bool, string) {
		var list eventsv1.EventList
		if err := b.c.List(context.Background(), &list, client.InNamespace(b.ns)); err != nil {
			return false, err.Error()
		}
		for _, e := range list.Items {
			if e.Regarding.Name == name && e.Type == corev1.EventTypeWarning {
				got = e.Reason + ": " + e.Note
				return true, ""
			}
		}
		return false, "none"
	})
	return got
}
