package pgrules

import (
	"slices"
	"strings"
	"testing"
)

// FuzzMergeHBA: for any user pg_hba (or pg_ident) lines and any roles the
// annotations may name, the merge puts our rule first, exactly once, keeps
// every user line in its order, is the same when done again, and strips back
// to the user's lines; our rule is one line naming those roles only. It
// builds on the standard library alone: go test -fuzz instruments every
// package of the test binary, and a cold make test compiles them all again.
func FuzzMergeHBA(f *testing.F) {
	f.Add("host all all 0.0.0.0/0 scram-sha-256\nhostssl all app all cert", "teleport_read", "teleport_write")
	f.Add("hostssl all old all cert # cnpg-teleport\nlocal all all peer", "r", "w")
	f.Add("", "postgres", "pg_monitor")
	f.Add("host all all all trust  # cnpg-teleport  ", "a", "a\nhost all all all trust")
	f.Fuzz(func(t *testing.T, user, read, write string) {
		var c Roles // a Cluster with no roles of its own: the names alone
		if c.CheckRole(read) != nil || c.CheckRole(write) != nil || read == write {
			return
		}
		var lines []string
		if user != "" {
			lines = strings.Split(user, "\n")
		}
		for _, mine := range [][]string{{HBALine(read, write)}, {MappedHBALine(read, write)}, IdentLines(read, write)} {
			for _, l := range mine {
				if strings.ContainsAny(l, "\r\n\x00") || !strings.HasSuffix(l, Marker) {
					t.Fatalf("our line %q is not one line ending with the marker", l)
				}
			}
			if f := strings.Fields(mine[0]); mine[0] != IdentLines(read, write)[0] && (f[0] != "hostssl" || f[2] != read+","+write || f[4] != "cert") {
				t.Fatalf("rule %q is not hostssl for %s,%s by certificate", mine[0], read, write)
			}
			merged := MergeHBA(lines, mine...)
			if !slices.Equal(merged[:len(mine)], mine) {
				t.Fatalf("ours not first: %q", merged)
			}
			for _, l := range mine {
				if n := slices.Index(merged[len(mine):], l); n >= 0 {
					t.Fatalf("our line %q twice: %q", l, merged)
				}
			}
			if !slices.Equal(StripHBA(merged), StripHBA(lines)) {
				t.Fatalf("user lines changed: %q -> %q", lines, merged)
			}
			if again := MergeHBA(merged, mine...); !slices.Equal(again, merged) {
				t.Fatalf("not stable: %q -> %q", merged, again)
			}
			for _, l := range StripHBA(merged) {
				if !slices.Contains(lines, l) {
					t.Fatalf("line %q is not the user's", l)
				}
			}
		}
	})
}
