// Package clusterspec decides, without a client, the slice of a CNPG Cluster
// that cnpg-teleport changes so PostgreSQL trusts Teleport: the client CA
// (spec.certificates.clientCASecret, the user's value saved for an exact
// restore), its pg_hba lines (recognisable, always first among the user's,
// removable exactly) and its read and write login roles (DatabaseRole
// objects, so the Cluster's atomic managed.roles list is never touched).
package clusterspec

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Marker ends every pg_hba line cnpg-teleport writes (a comment is legal
// pg_hba syntax), so exactly those lines can be found and removed.
const Marker = "# cnpg-teleport"

// AnnotationSaved keeps, as JSON, the user's own values of the
// spec.certificates fields cnpg-teleport replaced (and whether the Cluster
// had spec.certificates at all), for an exact Restore.
const AnnotationSaved = "cnpg-teleport.io/saved-certificates"

// Certs are the spec.certificates fields cnpg-teleport may set; an empty
// field is left as the user has it.
type Certs struct {
	ClientCASecret       string `json:"clientCASecret,omitempty"`
	ReplicationTLSSecret string `json:"replicationTLSSecret,omitempty"`
	ServerTLSSecret      string `json:"serverTLSSecret,omitempty"`
	ServerCASecret       string `json:"serverCASecret,omitempty"`
}

type saved struct {
	HadCertificates bool              `json:"hadCertificates"`
	Fields          map[string]string `json:"fields"` // field -> the user's value ("" if unset)
	// AltDNSNames are the spec.certificates.serverAltDNSNames cnpg-teleport
	// added (the Poolers' service names), never one the user had.
	AltDNSNames []string `json:"altDNSNames,omitempty"`
}

// Slice is everything cnpg-teleport sets on a Cluster: the spec.certificates
// fields (an empty one is left as the user has it), its pg_hba and pg_ident
// lines (each ending in Marker) and the server names CNPG's own server
// certificate must also carry (the Poolers' services).
type Slice struct {
	Certs       Certs
	HBA         []string
	Ident       []string
	AltDNSNames []string
}

func fields(cs *cnpgv1.CertificatesConfiguration) map[string]*string {
	return map[string]*string{
		"clientCASecret": &cs.ClientCASecret, "replicationTLSSecret": &cs.ReplicationTLSSecret,
		"serverTLSSecret": &cs.ServerTLSSecret, "serverCASecret": &cs.ServerCASecret,
	}
}

func (w Certs) values() map[string]string {
	return map[string]string{
		"clientCASecret": w.ClientCASecret, "replicationTLSSecret": w.ReplicationTLSSecret,
		"serverTLSSecret": w.ServerTLSSecret, "serverCASecret": w.ServerCASecret,
	}
}

func readSaved(c *cnpgv1.Cluster) (saved, bool) {
	raw, ok := c.Annotations[AnnotationSaved]
	if !ok {
		return saved{}, false
	}
	var s saved
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		return saved{HadCertificates: true}, true // unreadable: restore nothing of spec.certificates
	}
	return s, true
}

// Default role names, and the annotations that choose others.
const (
	DefaultReadRole  = "teleport_read"
	DefaultWriteRole = "teleport_write"
)

var roleName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// ValidateRole refuses a name that is not a plain PostgreSQL identifier or
// that names a role CNPG or PostgreSQL own, or one the Cluster already
// manages (taking it over would widen who reaches it).
func ValidateRole(c *cnpgv1.Cluster, name string) error {
	if err := validName(name); err != nil {
		return err
	}
	if b := c.Spec.Bootstrap; b != nil && b.InitDB != nil && b.InitDB.Owner == name {
		return fmt.Errorf("role %q owns the Cluster's application database", name)
	}
	if m := c.Spec.Managed; m != nil && slices.ContainsFunc(m.Roles, func(r cnpgv1.RoleConfiguration) bool { return r.Name == name }) {
		return fmt.Errorf("role %q is already in spec.managed.roles", name)
	}
	return nil
}

// validName refuses a name that is not a plain PostgreSQL identifier, or
// that names a role of PostgreSQL or CNPG, or Teleport's admin.
func validName(name string) error {
	switch {
	case !roleName.MatchString(name):
		return fmt.Errorf("role %q: want a lower-case PostgreSQL identifier ([a-z_][a-z0-9_]*, at most 63)", name)
	case name == "postgres" || name == "streaming_replica" || strings.HasPrefix(name, "pg_") || strings.HasPrefix(name, "cnpg_"):
		return fmt.Errorf("role %q is reserved by PostgreSQL or CNPG", name)
	case name == AdminUser:
		return fmt.Errorf("role %q is reserved: Teleport's admin for automatic user provisioning", name)
	}
	return nil
}

// HBALine is the one pg_hba rule: Teleport's client certificates, CN = role.
func HBALine(roles ...string) string {
	return "hostssl all " + strings.Join(roles, ",") + " all cert " + Marker
}

// IdentMap is the pg_ident map of the rule when a Pooler is registered.
const IdentMap = "cnpg-teleport"

// PoolerUser is the user CNPG's PgBouncer logs in to PostgreSQL as (CN of
// its client certificate <cluster>-pooler).
const PoolerUser = "cnpg_pooler_pgbouncer"

// MappedHBALine is HBALine with the pg_ident map that also lets PgBouncer's
// client certificate (CN cnpg_pooler_pgbouncer) log in as the roles: how a
// Teleport user, authenticated by certificate at a registered Pooler,
// reaches PostgreSQL through it. Only while a Pooler is registered.
func MappedHBALine(roles ...string) string {
	return "hostssl all " + strings.Join(roles, ",") + " all cert map=" + IdentMap + " " + Marker
}

// IdentLines are the map of MappedHBALine: each role as itself (a Teleport
// certificate straight to PostgreSQL) and PgBouncer's user as each role.
func IdentLines(roles ...string) []string {
	var out []string
	for _, r := range roles {
		out = append(out, IdentMap+" "+r+" "+r+" "+Marker)
	}
	for _, r := range roles {
		out = append(out, IdentMap+" "+PoolerUser+" "+r+" "+Marker)
	}
	return out
}

// PoolerHBALine is the PgBouncer hba rule of a registered Pooler: the roles
// only by a client certificate whose CN is the role (PgBouncer checks the
// name and the chain against its client CA, the Cluster's bundle).
func PoolerHBALine(roles ...string) string {
	return "hostssl all " + strings.Join(roles, ",") + " all cert " + Marker
}

func ours(line string) bool { return strings.HasSuffix(strings.TrimSpace(line), Marker) }

// MergeHBA puts our lines first among the user's (pg_hba is first match:
// no user line can shadow them; only CNPG's fixed rules for its own users
// come before), dropping any older line of ours and keeping every user line
// in its order.
func MergeHBA(lines []string, mine ...string) []string {
	return append(slices.Clone(mine), StripHBA(lines)...)
}

// StripHBA removes exactly our lines.
func StripHBA(lines []string) []string {
	out := slices.DeleteFunc(slices.Clone(lines), ours)
	if len(out) == 0 {
		return nil
	}
	return out
}

// OwnClientCASecret is the Secret the user trusts for client certificates:
// their own clientCASecret (saved while the bundle replaces it), else CNPG's
// <cluster>-ca.
func OwnClientCASecret(c *cnpgv1.Cluster, bundle string) string {
	if sv, ok := readSaved(c); ok {
		if v := sv.Fields["clientCASecret"]; v != "" {
			return v
		}
		return c.Name + "-ca"
	}
	if c.Spec.Certificates != nil && c.Spec.Certificates.ClientCASecret != "" && c.Spec.Certificates.ClientCASecret != bundle {
		return c.Spec.Certificates.ClientCASecret
	}
	return c.Name + "-ca"
}

// Trust returns the Cluster with the non-empty fields of want set in
// spec.certificates, our pg_hba and pg_ident lines first and our server
// names added. The user's values of those fields are saved once, for Restore.
func Trust(c *cnpgv1.Cluster, want Slice) *cnpgv1.Cluster {
	out := c.DeepCopy()
	sv, ok := readSaved(out)
	if !ok {
		sv = saved{HadCertificates: out.Spec.Certificates != nil, Fields: map[string]string{}}
	}
	if out.Spec.Certificates == nil {
		out.Spec.Certificates = &cnpgv1.CertificatesConfiguration{}
	}
	cur := fields(out.Spec.Certificates)
	for k, v := range want.Certs.values() {
		if v == "" {
			continue
		}
		if _, done := sv.Fields[k]; !done {
			user := *cur[k]
			if user == v {
				user = "" // ours already (an earlier pass lost the annotation)
			}
			sv.Fields[k] = user
		}
		*cur[k] = v
	}
	out.Spec.Certificates.ServerAltDNSNames, sv.AltDNSNames = mergeNames(out.Spec.Certificates.ServerAltDNSNames, sv.AltDNSNames, want.AltDNSNames)
	raw, _ := json.Marshal(sv)
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	out.Annotations[AnnotationSaved] = string(raw)
	out.Spec.PostgresConfiguration.PgHBA = MergeHBA(out.Spec.PostgresConfiguration.PgHBA, want.HBA...)
	out.Spec.PostgresConfiguration.PgIdent = MergeHBA(out.Spec.PostgresConfiguration.PgIdent, want.Ident...)
	return out
}

// mergeNames returns the user's names (cur without the ones we added) then
// the wanted ones the user lacks, and those as the new added set.
func mergeNames(cur, added, want []string) (names, nowAdded []string) {
	user := slices.DeleteFunc(slices.Clone(cur), func(n string) bool { return slices.Contains(added, n) })
	names = slices.Clone(user)
	for _, n := range want {
		if !slices.Contains(names, n) {
			names = append(names, n)
			nowAdded = append(nowAdded, n)
		}
	}
	if len(names) == 0 {
		names = nil
	}
	return names, nowAdded
}

// UserAltDNSNames are the Cluster's serverAltDNSNames without those
// cnpg-teleport added.
func UserAltDNSNames(c *cnpgv1.Cluster) []string {
	if c.Spec.Certificates == nil {
		return nil
	}
	sv, _ := readSaved(c)
	names, _ := mergeNames(c.Spec.Certificates.ServerAltDNSNames, sv.AltDNSNames, nil)
	return names
}

// Restore returns the Cluster with our slice undone: each field we set back
// to the user's value (spec.certificates gone again if we added it and
// nothing else is in it), our pg_hba and pg_ident lines and our server names
// removed, the saved annotation dropped. Everything else the user wrote, in
// the meantime too, stays.
func Restore(c *cnpgv1.Cluster) *cnpgv1.Cluster {
	out := c.DeepCopy()
	if sv, ok := readSaved(out); ok && out.Spec.Certificates != nil {
		cur := fields(out.Spec.Certificates)
		for k, v := range sv.Fields {
			if p, known := cur[k]; known {
				*p = v
			}
		}
		cs := out.Spec.Certificates
		cs.ServerAltDNSNames, _ = mergeNames(cs.ServerAltDNSNames, sv.AltDNSNames, nil)
		if !sv.HadCertificates && cs.ClientCASecret == "" && cs.ServerCASecret == "" && cs.ServerTLSSecret == "" &&
			cs.ReplicationTLSSecret == "" && len(cs.ServerAltDNSNames) == 0 {
			out.Spec.Certificates = nil
		}
	}
	delete(out.Annotations, AnnotationSaved)
	if len(out.Annotations) == 0 {
		out.Annotations = nil
	}
	out.Spec.PostgresConfiguration.PgHBA = StripHBA(out.Spec.PostgresConfiguration.PgHBA)
	out.Spec.PostgresConfiguration.PgIdent = StripHBA(out.Spec.PostgresConfiguration.PgIdent)
	return out
}

// Trusted reports whether the Cluster is in our slice's state already:
// Trust would change nothing.
func Trusted(c *cnpgv1.Cluster, want Slice) bool {
	if _, ok := readSaved(c); !ok {
		return false
	}
	next := Trust(c, want)
	return apiequality.Semantic.DeepEqual(next.Spec, c.Spec) && next.Annotations[AnnotationSaved] == c.Annotations[AnnotationSaved]
}

// Changed reports whether the Cluster has any of our slice left.
func Changed(c *cnpgv1.Cluster) bool {
	_, saved := c.Annotations[AnnotationSaved]
	return saved || slices.ContainsFunc(c.Spec.PostgresConfiguration.PgHBA, ours) || slices.ContainsFunc(c.Spec.PostgresConfiguration.PgIdent, ours)
}

// Role is a login role for Teleport users and the predefined roles it is granted.
type Role struct {
	Name       string
	InRoles    []string
	CreateRole bool // the auto-users admin
	NoLogin    bool // the admin left behind when auto-users are turned off
	Retain     bool // kept in PostgreSQL when the object is deleted
}

// Roles are the read and the write role: reading all data, and reading and
// writing all data (PostgreSQL >= 14 predefined roles).
func Roles(read, write string) []Role {
	return []Role{
		{Name: read, InRoles: []string{"pg_read_all_data"}},
		{Name: write, InRoles: []string{"pg_read_all_data", "pg_write_all_data"}},
	}
}

// DatabaseRole is the CNPG DatabaseRole object of one role: login, no
// password (certificate authentication only), owned by the Cluster, dropped
// from PostgreSQL when the object is deleted.
func DatabaseRole(c *cnpgv1.Cluster, r Role, labels map[string]string) *cnpgv1.DatabaseRole {
	comment := "Teleport users (cnpg-teleport)"
	if r.Name == AdminUser {
		comment = "Teleport's admin for automatic user provisioning (cnpg-teleport)"
	}
	reclaim := cnpgv1.DatabaseRoleReclaimDelete
	if r.Retain {
		reclaim = cnpgv1.DatabaseRoleReclaimRetain
	}
	return &cnpgv1.DatabaseRole{
		TypeMeta: metav1.TypeMeta{APIVersion: cnpgv1.SchemeGroupVersion.String(), Kind: "DatabaseRole"},
		ObjectMeta: metav1.ObjectMeta{
			Namespace: c.Namespace, Name: DatabaseRoleName(c, r.Name), Labels: labels,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: cnpgv1.SchemeGroupVersion.String(), Kind: cnpgv1.ClusterKind, Name: c.Name, UID: c.UID,
			}},
		},
		Spec: cnpgv1.DatabaseRoleSpec{
			RoleConfiguration: cnpgv1.RoleConfiguration{
				Name: r.Name, Comment: comment, Ensure: cnpgv1.EnsurePresent,
				Login: !r.NoLogin, Inherit: ptr(true), DisablePassword: true, InRoles: r.InRoles, CreateRole: r.CreateRole,
			},
			ClusterRef:    corev1.LocalObjectReference{Name: c.Name},
			ReclaimPolicy: reclaim,
		},
	}
}

// MergeDatabaseRole is have with every field DatabaseRole sets taken from
// want, so fields CNPG defaults are kept (no write every pass) while a hand
// edit of ours (superuser, say) is undone.
func MergeDatabaseRole(have, want cnpgv1.DatabaseRoleSpec) cnpgv1.DatabaseRoleSpec {
	out := *have.DeepCopy()
	rc, w := &out.RoleConfiguration, want.RoleConfiguration
	rc.Name, rc.Comment, rc.Ensure, rc.Login, rc.Inherit, rc.DisablePassword = w.Name, w.Comment, w.Ensure, w.Login, w.Inherit, w.DisablePassword
	rc.InRoles, rc.PasswordSecret = slices.Clone(w.InRoles), w.PasswordSecret
	rc.Superuser, rc.CreateDB, rc.CreateRole, rc.Replication, rc.BypassRLS = w.Superuser, w.CreateDB, w.CreateRole, w.Replication, w.BypassRLS
	out.ClusterRef, out.ReclaimPolicy, out.ClientCertificate = want.ClusterRef, want.ReclaimPolicy, want.ClientCertificate
	return out
}

// DatabaseRoleName is <cluster>-<role>, '_' as '-' (object names are DNS names).
func DatabaseRoleName(c *cnpgv1.Cluster, role string) string {
	return c.Name + "-" + strings.ReplaceAll(role, "_", "-")
}

func ptr[T any](v T) *T { return &v }
