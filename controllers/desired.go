package controllers

import (
	"slices"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	"github.com/gravitational/teleport/api/types"

	"github.com/cnpg-teleport/cnpg-teleport/clusterspec"
	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
)

// What a Cluster's annotations ask for, and the db resources that gives, are
// decided by dbspec from plain facts; these read the facts from CNPG's types.

// FieldManager is the field manager of the controller's writes (the
// apiserver takes it from the user agent, which the binary sets): what Argo
// CD's ignoreDifferences managedFieldsManagers names.
const FieldManager = "cnpg-teleport"

// facts are what dbspec reads of a Cluster.
func facts(c *cnpgv1.Cluster) dbspec.Cluster {
	return dbspec.Cluster{
		Namespace: c.Namespace, Name: c.Name, UID: string(c.UID), Annotations: c.Annotations, Instances: c.Spec.Instances,
		Roles: clusterspec.RoleFacts(c), AltDNSNames: clusterspec.UserAltDNSNames(c),
	}
}

// OptedIn reports whether the Cluster asks to be registered.
func OptedIn(c *cnpgv1.Cluster) bool { return c.Annotations[dbspec.AnnotationRegister] == "true" }

// KeepOnDelete reports whether the db resources stay in Teleport when the Cluster goes.
func KeepOnDelete(c *cnpgv1.Cluster) bool { return c.Annotations[dbspec.AnnotationKeep] == "true" }

// keepOnDelete is KeepOnDelete for the moment of deletion, when a value
// that is neither "true" nor "false" must not be guessed at.
func keepOnDelete(c *cnpgv1.Cluster) (bool, error) {
	switch v, ok := c.Annotations[dbspec.AnnotationKeep]; {
	case !ok, v == "false":
		return false, nil
	case v == "true":
		return true, nil
	default:
		return false, &dbspec.InvalidAnnotationError{Annotation: dbspec.AnnotationKeep, Value: v, Reason: `must be "true" or "false"`}
	}
}

// ParseAnnotations reads every annotation of c and reports all problems together.
func ParseAnnotations(o dbspec.Options, c *cnpgv1.Cluster) (dbspec.Spec, error) {
	return dbspec.ParseAnnotations(o, facts(c))
}

// DesiredDatabases builds the db resources a Cluster asks for: one per
// endpoint, verify-full against the Cluster's server CA, with ownership labels.
func DesiredDatabases(o dbspec.Options, c *cnpgv1.Cluster, serverCA []byte) ([]types.Database, error) {
	spec, err := ParseAnnotations(o, c)
	if err != nil {
		return nil, err
	}
	return BuildDatabases(o, c, spec, serverCA)
}

// BuildDatabases is DesiredDatabases for annotations already parsed.
func BuildDatabases(o dbspec.Options, c *cnpgv1.Cluster, spec dbspec.Spec, serverCA []byte) ([]types.Database, error) {
	return dbspec.BuildDatabases(o, facts(c), spec, serverCA)
}

// PoolerRegistered reports whether a Pooler of an opted-in Cluster asks to
// be registered: its own annotation, or the Cluster's list.
func PoolerRegistered(p *cnpgv1.Pooler, spec dbspec.Spec) bool {
	return p.Annotations[dbspec.AnnotationRegister] == "true" || slices.Contains(spec.Poolers, p.Name)
}

// PoolerEndpoint is the db name suffix of a Pooler (dbspec.PoolerEndpoint).
func PoolerEndpoint(c *cnpgv1.Cluster, p *cnpgv1.Pooler) string {
	return dbspec.PoolerEndpoint(c.Name, p.Name)
}

// BuildPoolerDatabases are the db resources of registered Poolers
// (dbspec.BuildPoolerDatabases).
func BuildPoolerDatabases(o dbspec.Options, c *cnpgv1.Cluster, spec dbspec.Spec, poolers []*cnpgv1.Pooler, serverCA []byte) ([]types.Database, []string, error) {
	ps := make([]dbspec.Pooler, 0, len(poolers))
	for _, p := range poolers {
		ps = append(ps, dbspec.Pooler{Namespace: p.Namespace, Name: p.Name, Type: string(p.Spec.Type)})
	}
	return dbspec.BuildPoolerDatabases(o, facts(c), spec, ps, serverCA)
}

// OwnedByCluster reports whether db was created for this very Cluster (by UID).
func OwnedByCluster(db dbspec.Labeled, o dbspec.Options, c *cnpgv1.Cluster) bool {
	return dbspec.OwnedByCluster(db, o, c.Namespace, c.Name, string(c.UID))
}
