// Package clusterspec decides, without a client, the slice of a CNPG Cluster
// that cnpg-teleport changes so PostgreSQL trusts Teleport: the client CA
// (spec.certificates.clientCASecret, the user's value saved for an exact
// restore), its pg_hba lines (recognisable, always first among the user's,
// removable exactly) and its read and write login roles (DatabaseRole
// objects, so the Cluster's atomic managed.roles list is never touched).
package clusterspec

import (
	"encoding/json"
	"slices"
	"strings"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cnpg-teleport/cnpg-teleport/pgrules"
)

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

// RoleFacts are the Cluster's facts the role checks of pgrules read: the
// initdb owner, the application database and its owner, spec.managed.roles.
func RoleFacts(c *cnpgv1.Cluster) pgrules.Roles {
	r := pgrules.Roles{}
	if b := c.Spec.Bootstrap; b != nil && b.InitDB != nil {
		r.InitDBOwner = b.InitDB.Owner
	}
	r.AppDatabase, r.AppOwner = AppDatabase(c)
	if m := c.Spec.Managed; m != nil {
		for _, role := range m.Roles {
			r.Managed = append(r.Managed, role.Name)
		}
	}
	return r
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
	out.Spec.PostgresConfiguration.PgHBA = pgrules.MergeHBA(out.Spec.PostgresConfiguration.PgHBA, want.HBA...)
	out.Spec.PostgresConfiguration.PgIdent = pgrules.MergeHBA(out.Spec.PostgresConfiguration.PgIdent, want.Ident...)
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
	out.Spec.PostgresConfiguration.PgHBA = pgrules.StripHBA(out.Spec.PostgresConfiguration.PgHBA)
	out.Spec.PostgresConfiguration.PgIdent = pgrules.StripHBA(out.Spec.PostgresConfiguration.PgIdent)
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
	return saved || slices.ContainsFunc(c.Spec.PostgresConfiguration.PgHBA, pgrules.Ours) || slices.ContainsFunc(c.Spec.PostgresConfiguration.PgIdent, pgrules.Ours)
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
	if r.Name == pgrules.AdminUser {
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
