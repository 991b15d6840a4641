// Package dbspec decides, without a client, what a CNPG Cluster's
// annotations ask for and the Teleport db resources that gives: the
// annotations and labels (the public API), the names, the verify-full db
// resources with their ownership labels, and whether one is ours to change.
// It reads a Cluster as plain facts (Cluster, Pooler: the controller makes
// them from CNPG's types), so it builds on Teleport's API types alone, and
// so do its fuzz targets: go test -fuzz instruments every package of the
// test binary, and a cold make test compiles each of them again.
package dbspec

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/gravitational/teleport/api/types"

	"github.com/cnpg-teleport/cnpg-teleport/pgrules"
)

// Annotations on a CNPG Cluster: the public API.
const (
	// AnnotationRegister opts a Cluster in with the exact value "true".
	AnnotationRegister = "cnpg-teleport.io/register"
	// AnnotationName is the Teleport name prefix (default <kube-cluster>-<namespace>-<cluster>).
	AnnotationName = "cnpg-teleport.io/name"
	// AnnotationLabels are extra labels, k=v,k2=v2, merged over the controller's static labels.
	AnnotationLabels = "cnpg-teleport.io/labels"
	// AnnotationEndpoints is a subset of rw,ro,r (default rw, plus ro when instances > 1).
	AnnotationEndpoints = "cnpg-teleport.io/endpoints"
	// AnnotationKeep "true" leaves the db resources in Teleport when the Cluster goes.
	AnnotationKeep = "cnpg-teleport.io/keep"
	// AnnotationReadRole names the PostgreSQL login role that reads all data (default teleport_read).
	AnnotationReadRole = "cnpg-teleport.io/read-role"
	// AnnotationWriteRole names the login role that reads and writes all data (default teleport_write).
	AnnotationWriteRole = "cnpg-teleport.io/write-role"
	// AnnotationClientIssuer (Issuer/NAME or ClusterIssuer/NAME) makes that issuer's CA the Cluster's client CA;
	// the replication client certificate is then issued through cert-manager.
	AnnotationClientIssuer = "cnpg-teleport.io/client-issuer"
	// AnnotationServerIssuer makes that issuer sign the server certificate (through cert-manager).
	AnnotationServerIssuer = "cnpg-teleport.io/server-issuer"
	// AnnotationPoolers lists, on the Cluster, the Poolers (by name) to register too.
	// The same AnnotationRegister on a Pooler of an opted-in Cluster does it as well.
	AnnotationPoolers = "cnpg-teleport.io/poolers"
	// AnnotationAutoUsers "true" turns on Teleport's automatic user
	// provisioning: a PostgreSQL user per Teleport user, made by the admin
	// teleport_admin (pgrules.AdminUser) the controller provisions.
	AnnotationAutoUsers = "cnpg-teleport.io/auto-users"
	// AnnotationAutoUserRoles are the PostgreSQL roles Teleport roles may
	// grant those users (db_roles), comma-separated (default: the read and
	// the write role). Checked against the Teleport roles, never a system role.
	AnnotationAutoUserRoles = "cnpg-teleport.io/auto-user-roles"
)

// Labels on the Teleport db resources. The ownership labels mark what this
// controller created; it never updates or deletes a db resource without them.
const (
	LabelManagedBy   = "cnpg-teleport.io/managed-by"
	ManagedByValue   = "cnpg-teleport" // the controller's Teleport role selects on it
	LabelKubeCluster = "cnpg-teleport.io/kube-cluster"
	// LabelKubeClusterID is a stable identity of the Kubernetes cluster (by
	// default its kube-system namespace UID): two clusters given the same
	// --kube-cluster name never take each other's db resources for their own.
	LabelKubeClusterID = "cnpg-teleport.io/kube-cluster-id"
	LabelNamespace     = "cnpg-teleport.io/namespace"
	LabelCluster       = "cnpg-teleport.io/cluster"
	LabelClusterUID    = "cnpg-teleport.io/cluster-uid"
	LabelEndpoint      = "cnpg-teleport.io/endpoint"
	LabelKeep          = "cnpg-teleport.io/keep"
	LabelPooler        = "cnpg-teleport.io/pooler"
	LabelSQLType       = "sql_type"
	reservedPrefix     = "cnpg-teleport.io/"
	teleportPrefix     = "teleport.dev/"
	internalPrefix     = "teleport.internal/"
	maxNameLength      = 63
	postgresPort       = "5432"
)

// Endpoints of a CNPG Cluster, in the order db resources are built.
var endpointOrder = []string{"rw", "ro", "r"}

// Options are the controller-wide settings that shape every registration.
type Options struct {
	// KubeCluster names this Kubernetes cluster; it goes into names and
	// ownership labels so several clusters can share one Teleport.
	KubeCluster string
	// StaticLabels are put on every db resource (under the user's labels).
	StaticLabels map[string]string
	// Domain is the cluster DNS domain (default cluster.local).
	Domain string
	// KubeClusterID is this Kubernetes cluster's stable identity (label
	// cnpg-teleport.io/kube-cluster-id).
	KubeClusterID string
	// AnnotationLabels is the platform team's policy for the labels
	// annotation: each allowed key, with its allowed values (empty: any).
	// No key is allowed by default: labels decide access in Teleport.
	AnnotationLabels map[string][]string
	// AnyName lets cnpg-teleport.io/name be any valid name; by default it
	// must be the Cluster's namespace or start with "<namespace>-".
	AnyName bool
}

// Validate checks the options once at start.
func (o *Options) Validate() error {
	if o.Domain == "" {
		o.Domain = "cluster.local"
	}
	var errs []error
	if o.KubeCluster == "" || sanitize(o.KubeCluster) != o.KubeCluster {
		errs = append(errs, fmt.Errorf("kube cluster name %q: must be lowercase letters, digits and '-', starting with a letter", o.KubeCluster))
	}
	if !labelValue.MatchString(o.KubeClusterID) {
		errs = append(errs, fmt.Errorf("kube cluster id %q: want a non-empty label value of at most 63 characters", o.KubeClusterID))
	}
	for k := range o.StaticLabels {
		if err := checkLabelKey(k); err != nil {
			errs = append(errs, fmt.Errorf("static label: %w", err))
		}
	}
	for k := range o.AnnotationLabels {
		if err := checkLabelKey(k); err != nil {
			errs = append(errs, fmt.Errorf("annotation label policy: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Spec is what a Cluster's annotations ask for.
type Spec struct {
	Prefix    string // name prefix: the default (sanitized), or the annotation's exactly
	Explicit  bool   // Prefix is the annotation's: never shortened
	Labels    map[string]string
	Endpoints []string
	Keep      bool
	ReadRole  string // PostgreSQL login role for Teleport users, reading
	WriteRole string // and reading and writing
	// ClientIssuer and ServerIssuer select issuer mode (nil: CNPG's own CA).
	ClientIssuer, ServerIssuer *cmmeta.IssuerReference
	// Poolers are the Poolers the Cluster's annotation asks to register.
	Poolers []string
	// AutoUsers turns on automatic user provisioning; GrantRoles are the
	// roles Teleport may grant the users it creates.
	AutoUsers  bool
	GrantRoles []string
	// AdminUser goes into the rw db resource's admin_user: set by the trust
	// step once CNPG runs the admin and its schema, never by an annotation.
	AdminUser string
}

// Cluster is what the parsing and the builders read of a CNPG Cluster.
type Cluster struct {
	Namespace, Name, UID string
	Annotations          map[string]string
	Instances            int
	// Roles are the role facts the role annotations are checked against.
	Roles pgrules.Roles
	// AltDNSNames are the user's own spec.certificates.serverAltDNSNames
	// (clusterspec.UserAltDNSNames): CNPG rejects them beside a server TLS Secret.
	AltDNSNames []string
}

// Pooler is what the builders read of a CNPG Pooler of the Cluster.
type Pooler struct {
	Namespace, Name string
	// Type is spec.type: rw (to the primary), ro (to the replicas).
	Type string
}

// InvalidAnnotationError is a user error in one annotation: the controller
// reports it in a Warning Event and applies nothing.
type InvalidAnnotationError struct {
	Annotation, Value, Reason string
}

func (e *InvalidAnnotationError) Error() string {
	if v := e.Value; len(v) > maxQuoted { // a hostile value is not repeated whole into every log line and Event
		return fmt.Sprintf("annotation %s=%q… (%d bytes): %s", e.Annotation, Truncate(v, maxQuoted), len(v), e.Reason)
	}
	return fmt.Sprintf("annotation %s=%q: %s", e.Annotation, e.Value, e.Reason)
}

// maxQuoted is how much of an invalid annotation's value an error quotes.
const maxQuoted = 80

// ParseAnnotations reads every annotation and reports all problems together.
func ParseAnnotations(o Options, c Cluster) (Spec, error) {
	a := c.Annotations
	var errs []error
	bad := func(ann, reason string) { errs = append(errs, &InvalidAnnotationError{ann, a[ann], reason}) }

	s := Spec{Prefix: defaultPrefix(o.KubeCluster, c.Namespace, c.Name)}
	if v, ok := a[AnnotationName]; ok {
		if err := checkName(o, c.Namespace, v); err != nil {
			bad(AnnotationName, err.Error())
		}
		s.Prefix, s.Explicit = v, true
	}
	if v, ok := a[AnnotationLabels]; ok {
		labels, err := ParseLabels(v)
		if err == nil {
			err = checkLabelPolicy(o, labels)
		}
		if err != nil {
			bad(AnnotationLabels, err.Error())
		}
		s.Labels = labels
	}
	s.Endpoints = []string{"rw"}
	if c.Instances > 1 {
		s.Endpoints = append(s.Endpoints, "ro")
	}
	if v, ok := a[AnnotationEndpoints]; ok {
		eps, err := parseEndpoints(v)
		if err != nil {
			bad(AnnotationEndpoints, err.Error())
		}
		s.Endpoints = eps
	}
	switch v, ok := a[AnnotationKeep]; {
	case !ok:
	case v == "true":
		s.Keep = true
	case v != "false":
		bad(AnnotationKeep, `must be "true" or "false"`)
	}
	s.ReadRole, s.WriteRole = pgrules.DefaultReadRole, pgrules.DefaultWriteRole
	for _, r := range []struct {
		ann  string
		role *string
	}{{AnnotationReadRole, &s.ReadRole}, {AnnotationWriteRole, &s.WriteRole}} {
		if v, ok := a[r.ann]; ok {
			*r.role = v
		}
		if err := c.Roles.CheckRole(*r.role); err != nil {
			bad(r.ann, err.Error())
		}
	}
	if s.ReadRole == s.WriteRole {
		bad(AnnotationWriteRole, "the read and the write role must differ")
	}
	for _, r := range []struct {
		ann string
		ref **cmmeta.IssuerReference
	}{{AnnotationClientIssuer, &s.ClientIssuer}, {AnnotationServerIssuer, &s.ServerIssuer}} {
		if v, ok := a[r.ann]; ok {
			ref, err := ParseIssuerRef(v)
			if err != nil {
				bad(r.ann, err.Error())
				continue
			}
			*r.ref = &ref
		}
	}
	if v, ok := a[AnnotationPoolers]; ok {
		poolers, err := parsePoolers(v)
		if err != nil {
			bad(AnnotationPoolers, err.Error())
		}
		s.Poolers = poolers
	}
	parseAutoUsers(c, &s, bad)
	if s.ServerIssuer != nil && len(c.AltDNSNames) > 0 { // ours (the Poolers') move into the issued certificate
		bad(AnnotationServerIssuer, "CNPG rejects spec.certificates.serverAltDNSNames beside a server TLS Secret: remove them to use a server issuer")
	}
	return s, errors.Join(errs...)
}

// parseAutoUsers reads the auto-users annotations into s.
func parseAutoUsers(c Cluster, s *Spec, bad func(ann, reason string)) {
	a := c.Annotations
	switch v, ok := a[AnnotationAutoUsers]; {
	case !ok, v == "false":
	case v == "true":
		s.AutoUsers = true
		if err := c.Roles.CheckAdmin(); err != nil {
			bad(AnnotationAutoUsers, err.Error())
		}
	default:
		bad(AnnotationAutoUsers, `must be "true" or "false"`)
	}
	s.GrantRoles = []string{s.ReadRole, s.WriteRole}
	v, ok := a[AnnotationAutoUserRoles]
	if !ok {
		return
	}
	if !s.AutoUsers {
		bad(AnnotationAutoUserRoles, "needs "+AnnotationAutoUsers+`: "true"`)
		return
	}
	s.GrantRoles = nil
	for item := range strings.SplitSeq(v, ",") {
		role := strings.TrimSpace(item)
		if err := c.Roles.CheckGrantable(role); err != nil {
			bad(AnnotationAutoUserRoles, err.Error())
			return
		}
		if !slices.Contains(s.GrantRoles, role) {
			s.GrantRoles = append(s.GrantRoles, role)
		}
	}
}

// ParseIssuerRef reads "Issuer/NAME" or "ClusterIssuer/NAME".
func ParseIssuerRef(v string) (cmmeta.IssuerReference, error) {
	kind, name, ok := strings.Cut(v, "/")
	if !ok || name == "" || strings.Contains(name, "/") || (kind != "Issuer" && kind != "ClusterIssuer") {
		return cmmeta.IssuerReference{}, fmt.Errorf("%q: want Issuer/NAME or ClusterIssuer/NAME", v)
	}
	return cmmeta.IssuerReference{Kind: kind, Name: name, Group: "cert-manager.io"}, nil
}

// ParseLabels parses k=v,k2=v2. Keys follow Teleport's label rule and may
// not use the controller's reserved prefix.
func ParseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for item := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(item), "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch {
		case !ok:
			return nil, fmt.Errorf("%q is not key=value", item)
		case v == "":
			return nil, fmt.Errorf("label %q has an empty value", k)
		}
		if err := checkLabelKey(k); err != nil {
			return nil, err
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("label %q given twice", k)
		}
		out[k] = v
	}
	return out, nil
}

var labelValue = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`)

// teleportName is Teleport's rule for a db name.
var teleportName = regexp.MustCompile(`^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$`)

// checkName refuses an explicit name prefix rather than rewriting it: it must
// be a valid Teleport name, leave room for "-rw", and, unless the policy says
// any, be the namespace or start with "<namespace>-" (one tenant cannot take
// another's names).
func checkName(o Options, namespace, v string) error {
	switch {
	case !teleportName.MatchString(v):
		return errors.New("not a Teleport db name (letters, digits and '-', starting with a letter, not ending with '-'); it is used as written, never rewritten")
	case len(v) > maxNameLength-len("-rw"):
		return fmt.Errorf("%d characters: at most %d, so that <name>-rw fits Teleport's 63", len(v), maxNameLength-len("-rw"))
	case !o.AnyName && v != namespace && !strings.HasPrefix(v, namespace+"-"):
		return fmt.Errorf("the name policy wants %q or a name starting with %q (the Cluster's namespace); the controller's --name-policy=any lifts it", namespace, namespace+"-")
	}
	return nil
}

// checkLabelPolicy refuses a label the platform team's policy does not let
// the annotation set (--annotation-labels): labels decide who reaches a db.
func checkLabelPolicy(o Options, labels map[string]string) error {
	keys := slices.Sorted(maps.Keys(labels))
	for _, k := range keys {
		allowed, ok := o.AnnotationLabels[k]
		switch {
		case !ok:
			return fmt.Errorf("label %q is not allowed by the controller's --annotation-labels policy (allowed keys: %s)", k, policyKeys(o))
		case len(allowed) > 0 && !slices.Contains(allowed, labels[k]):
			return fmt.Errorf("label %s=%s: the --annotation-labels policy allows only %s", k, labels[k], strings.Join(allowed, "|"))
		}
	}
	return nil
}

func policyKeys(o Options) string {
	if len(o.AnnotationLabels) == 0 {
		return "none"
	}
	return strings.Join(slices.Sorted(maps.Keys(o.AnnotationLabels)), ", ")
}

// ParseLabelPolicy parses --annotation-labels: key or key=v1|v2, comma-separated.
func ParseLabelPolicy(s string) (map[string][]string, error) {
	out := map[string][]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for item := range strings.SplitSeq(s, ",") {
		k, vs, hasValues := strings.Cut(strings.TrimSpace(item), "=")
		if err := checkLabelKey(k); err != nil {
			return nil, err
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("key %q given twice", k)
		}
		out[k] = nil
		if hasValues {
			for v := range strings.SplitSeq(vs, "|") {
				if v = strings.TrimSpace(v); v == "" {
					return nil, fmt.Errorf("key %q: an empty value", k)
				}
				out[k] = append(out[k], v)
			}
		}
	}
	return out, nil
}

func checkLabelKey(k string) error {
	switch {
	case !types.IsValidLabelKey(k):
		return fmt.Errorf("label key %q is not a valid Teleport label key", k)
	case strings.HasPrefix(k, reservedPrefix), strings.HasPrefix(k, teleportPrefix), strings.HasPrefix(k, internalPrefix), k == LabelSQLType:
		return fmt.Errorf("label key %q is reserved", k)
	}
	return nil
}

func parsePoolers(s string) ([]string, error) {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		n := strings.TrimSpace(item)
		if !poolerName.MatchString(n) {
			return nil, fmt.Errorf("%q is not a Pooler name", n)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

func parseEndpoints(s string) ([]string, error) {
	seen := map[string]bool{}
	for item := range strings.SplitSeq(s, ",") {
		ep := strings.TrimSpace(item)
		if !slices.Contains(endpointOrder, ep) {
			return nil, fmt.Errorf("unknown endpoint %q (want a subset of rw,ro,r)", ep)
		}
		if seen[ep] {
			return nil, fmt.Errorf("endpoint %q given twice", ep)
		}
		seen[ep] = true
	}
	var out []string
	for _, ep := range endpointOrder {
		if seen[ep] {
			out = append(out, ep)
		}
	}
	return out, nil
}

var invalidNameChars = regexp.MustCompile(`[^a-z0-9-]+`)

// poolerName is a Kubernetes object name (DNS-1123 label: a Pooler names its Service).
var poolerName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// sanitize makes s a valid Teleport db name: lowercase, [a-z0-9-], starting
// with a letter, no trailing or doubled '-'.
func sanitize(s string) string {
	s = invalidNameChars.ReplaceAllString(strings.ToLower(s), "-")
	for strings.Contains(s, "--") {
		s = strings.ReplaceAll(s, "--", "-")
	}
	s = strings.Trim(s, "-")
	if s != "" && (s[0] < 'a' || s[0] > 'z') {
		s = "db-" + s
	}
	return s
}

// defaultPrefix is <kube>-<namespace>-<cluster>. Joined by '-', that is
// unambiguous only when no part contains a '-' (or a character sanitizing
// turns into one): namespace a-b + cluster c and namespace a + cluster b-c
// would meet. Then an 8-hex hash of kube/namespace/cluster is appended, so
// names stay unique across namespaces and Kubernetes clusters.
func defaultPrefix(kube, namespace, cluster string) string {
	plain := true
	for _, p := range []string{kube, namespace, cluster} {
		plain = plain && p != "" && sanitize(p) == p && !strings.Contains(p, "-")
	}
	joined := sanitize(kube + "-" + namespace + "-" + cluster)
	if plain {
		return joined
	}
	sum := sha256.Sum256([]byte(kube + "/" + namespace + "/" + cluster))
	return joined + "-" + hex.EncodeToString(sum[:4])
}

// databaseName is <prefix>-<endpoint>, shortened deterministically to 63
// characters with a hash of the full name, so long names stay distinct.
func databaseName(prefix, endpoint string) string {
	name := prefix + "-" + endpoint
	if len(name) <= maxNameLength {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	h := hex.EncodeToString(sum[:4])
	keep := strings.TrimRight(prefix[:maxNameLength-len(endpoint)-len(h)-2], "-")
	return keep + "-" + h + "-" + endpoint
}

// DBName is the db resource name of an endpoint: an explicit prefix as
// written (a Pooler's name that would not fit is refused by the caller), a
// default one shortened with a hash when needed.
func (s Spec) DBName(endpoint string) string {
	if s.Explicit {
		return s.Prefix + "-" + endpoint
	}
	return databaseName(s.Prefix, endpoint)
}

// ErrNoServerCA means the server CA Secret holds no usable certificate.
var ErrNoServerCA = errors.New("server CA: no PEM certificate")

func checkCA(pemBytes []byte) error {
	certs := 0
	for rest := pemBytes; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return fmt.Errorf("%w: found a %s block (never copy a key)", ErrNoServerCA, b.Type)
		}
		certs++
	}
	if certs == 0 {
		return ErrNoServerCA
	}
	return nil
}

// BuildDatabases builds the db resources a Cluster's parsed annotations ask
// for: one per endpoint, verify-full against the Cluster's server CA, with
// ownership labels.
func BuildDatabases(o Options, c Cluster, spec Spec, serverCA []byte) ([]types.Database, error) {
	if err := checkCA(serverCA); err != nil {
		return nil, err
	}
	out := make([]types.Database, 0, len(spec.Endpoints))
	for _, ep := range spec.Endpoints {
		labels := maps.Clone(o.StaticLabels)
		if labels == nil {
			labels = map[string]string{}
		}
		maps.Copy(labels, spec.Labels)
		maps.Copy(labels, map[string]string{
			LabelManagedBy: ManagedByValue, LabelKubeCluster: o.KubeCluster, LabelKubeClusterID: o.KubeClusterID, LabelNamespace: c.Namespace,
			LabelCluster: c.Name, LabelClusterUID: c.UID, LabelEndpoint: ep, LabelSQLType: sqlType(ep),
		})
		if spec.Keep {
			labels[LabelKeep] = "true"
		}
		db, err := types.NewDatabaseV3(types.Metadata{
			Name:        spec.DBName(ep),
			Description: fmt.Sprintf("CloudNativePG cluster %s/%s (%s)", c.Namespace, c.Name, ep),
			Labels:      labels,
		}, types.DatabaseSpecV3{
			Protocol:  "postgres",
			URI:       fmt.Sprintf("%s-%s.%s.svc.%s:%s", c.Name, ep, c.Namespace, o.Domain, postgresPort),
			TLS:       types.DatabaseTLS{Mode: types.DatabaseTLSMode_VERIFY_FULL, CACert: string(serverCA)},
			AdminUser: adminUser(spec, ep),
		})
		if err != nil {
			return nil, fmt.Errorf("db resource for %s: %w", ep, err)
		}
		out = append(out, db)
	}
	return out, nil
}

// PoolerEndpoint is the db name suffix of a Pooler: "pooler-" and its name
// without the Cluster's name in front (pg-pooler-rw -> pooler-rw).
func PoolerEndpoint(cluster, pooler string) string {
	return "pooler-" + strings.TrimPrefix(strings.TrimPrefix(pooler, cluster+"-"), "pooler-")
}

// BuildPoolerDatabases are the db resources of registered Poolers: verify-full
// on the Pooler's Service name against the Cluster's server CA (PgBouncer
// presents the Cluster's server certificate, which names the Poolers), owned
// by the Cluster like its endpoints. Two Poolers of one db name: the first
// (by name) wins, the other is returned in clash, as is one whose name
// (under an explicit prefix, never shortened) would exceed 63 characters.
func BuildPoolerDatabases(o Options, c Cluster, spec Spec, poolers []Pooler, serverCA []byte) (dbs []types.Database, clash []string, err error) {
	if err := checkCA(serverCA); err != nil {
		return nil, nil, err
	}
	seen := map[string]bool{}
	for _, p := range poolers {
		ep := PoolerEndpoint(c.Name, p.Name)
		name := spec.DBName(ep)
		if seen[name] || len(name) > maxNameLength {
			clash = append(clash, p.Name)
			continue
		}
		seen[name] = true
		labels := maps.Clone(o.StaticLabels)
		if labels == nil {
			labels = map[string]string{}
		}
		maps.Copy(labels, spec.Labels)
		sql := "primary"
		if p.Type != "rw" {
			sql = "standby"
		}
		maps.Copy(labels, map[string]string{
			LabelManagedBy: ManagedByValue, LabelKubeCluster: o.KubeCluster, LabelKubeClusterID: o.KubeClusterID, LabelNamespace: c.Namespace,
			LabelCluster: c.Name, LabelClusterUID: c.UID, LabelEndpoint: "pooler", LabelPooler: p.Name, LabelSQLType: sql,
		})
		if spec.Keep {
			labels[LabelKeep] = "true"
		}
		db, err := types.NewDatabaseV3(types.Metadata{
			Name:        name,
			Description: fmt.Sprintf("CloudNativePG pooler %s/%s of cluster %s (%s)", p.Namespace, p.Name, c.Name, p.Type),
			Labels:      labels,
		}, types.DatabaseSpecV3{
			Protocol: "postgres",
			URI:      fmt.Sprintf("%s.%s.svc.%s:%s", p.Name, p.Namespace, o.Domain, postgresPort),
			TLS:      types.DatabaseTLS{Mode: types.DatabaseTLSMode_VERIFY_FULL, CACert: string(serverCA)},
		})
		if err != nil {
			return nil, nil, fmt.Errorf("db resource for pooler %s: %w", p.Name, err)
		}
		dbs = append(dbs, db)
	}
	return dbs, clash, nil
}

// Truncate is s cut to at most n bytes on a character boundary.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// adminUser is the admin_user of an endpoint's db resource: on rw only
// (Teleport creates users through it, which a replica cannot).
func adminUser(spec Spec, endpoint string) *types.DatabaseAdminUser {
	if spec.AdminUser == "" || endpoint != "rw" {
		return nil
	}
	return &types.DatabaseAdminUser{Name: spec.AdminUser}
}

func sqlType(endpoint string) string {
	if endpoint == "rw" {
		return "primary"
	}
	return "standby"
}

// Labeled is what the ownership checks read: a db resource, or an entry
// of a list of them (teleport.DatabaseMeta: name and labels only).
type Labeled interface {
	GetName() string
	GetStaticLabels() map[string]string
}

// OwnedBy reports whether this Kubernetes cluster's controller created db:
// its name and its identity. A db resource without the identity label was
// made before the label existed (upgrade): it is this cluster's to adopt,
// by the Cluster it names (the update adds the label, the name stays), but
// never an orphan to collect (see Legacy).
func OwnedBy(db Labeled, o Options) bool {
	l := db.GetStaticLabels()
	id, hasID := l[LabelKubeClusterID]
	return l[LabelManagedBy] == ManagedByValue && l[LabelKubeCluster] == o.KubeCluster && (!hasID || id == o.KubeClusterID)
}

// Legacy reports a db resource of this cluster's name made before the
// identity label: which Kubernetes cluster made it cannot be told.
func Legacy(db Labeled) bool {
	_, hasID := db.GetStaticLabels()[LabelKubeClusterID]
	return !hasID
}

// IdentityConflict reports a db resource of this controller's
// --kube-cluster name made under another identity: two Kubernetes clusters
// share the name.
func IdentityConflict(db Labeled, o Options) bool {
	l := db.GetStaticLabels()
	id, hasID := l[LabelKubeClusterID]
	return l[LabelManagedBy] == ManagedByValue && l[LabelKubeCluster] == o.KubeCluster && hasID && id != o.KubeClusterID
}

// OwnedByCluster reports whether db was created for this very Cluster (by UID).
func OwnedByCluster(db Labeled, o Options, namespace, name, uid string) bool {
	l := db.GetStaticLabels()
	return OwnedBy(db, o) && l[LabelNamespace] == namespace && l[LabelCluster] == name && l[LabelClusterUID] == uid
}

// ClusterRef returns the Cluster a db resource was created for.
func ClusterRef(db Labeled) (namespace, name, uid string, ok bool) {
	l := db.GetStaticLabels()
	namespace, name, uid = l[LabelNamespace], l[LabelCluster], l[LabelClusterUID]
	return namespace, name, uid, namespace != "" && name != "" && uid != ""
}

// Kept reports whether db is to stay in Teleport after its Cluster is gone.
func Kept(db Labeled) bool { return db.GetStaticLabels()[LabelKeep] == "true" }

// NeedsUpdate compares only what the controller sets, never server-set
// fields (revision, expiry, status, teleport.dev/ and teleport.internal/
// labels: the server adds teleport.dev/origin=dynamic to every write).
func NeedsUpdate(desired, actual types.Database) bool {
	dt, at := desired.GetTLS(), actual.GetTLS()
	return desired.GetURI() != actual.GetURI() ||
		desired.GetProtocol() != actual.GetProtocol() ||
		dt.Mode != at.Mode || dt.CACert != at.CACert || dt.ServerName != at.ServerName ||
		desired.GetMetadata().Description != actual.GetMetadata().Description ||
		desired.GetAdminUser().Name != actual.GetAdminUser().Name ||
		!maps.Equal(ownLabels(desired), ownLabels(actual))
}

func ownLabels(db types.Database) map[string]string {
	out := map[string]string{}
	for k, v := range db.GetStaticLabels() {
		if !strings.HasPrefix(k, teleportPrefix) && !strings.HasPrefix(k, internalPrefix) {
			out[k] = v
		}
	}
	return out
}

// ForUpdate is desired carrying the server's revision, so an update does
// not overwrite a change it has not seen (where the server checks it).
func ForUpdate(desired, actual types.Database) types.Database {
	u := desired.Copy()
	u.SetRevision(actual.GetRevision())
	return u
}

// Diff splits the work: desired names to create, desired ones that differ
// from the Cluster's own actual ones, and own ones no longer desired.
func Diff(desired, owned []types.Database) (create, update, remove []types.Database) {
	have := map[string]types.Database{}
	for _, a := range owned {
		have[a.GetName()] = a
	}
	want := map[string]bool{}
	for _, d := range desired {
		want[d.GetName()] = true
		a, ok := have[d.GetName()]
		switch {
		case !ok:
			create = append(create, d)
		case NeedsUpdate(d, a):
			update = append(update, d)
		}
	}
	for _, a := range owned {
		if !want[a.GetName()] {
			remove = append(remove, a)
		}
	}
	byName := func(s []types.Database) {
		sort.Slice(s, func(i, j int) bool { return s[i].GetName() < s[j].GetName() })
	}
	byName(create)
	byName(update)
	byName(remove)
	return create, update, remove
}
