package world

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
)

// AuditPolicy logs every write to the apiserver at Metadata level.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [create, update, patch, delete, deletecollection]
- level: None
`

// AuditOptions returns Options whose apiserver writes an audit log of every
// write into dir/audit.log, to count a client's writes independently of it.
func AuditOptions(dir string) (Options, string, error) {
	policy := filepath.Join(dir, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o600); err != nil {
		return Options{}, "", err
	}
	log := filepath.Join(dir, "audit.log")
	return Options{APIServerArgs: map[string]string{
		"audit-policy-file": policy, "audit-log-path": log, "audit-log-format": "json",
	}}, log, nil
}

// AuditWrites counts the writes by user recorded in an apiserver audit log
// (ResponseComplete stage), by "verb resource".
func AuditWrites(path, user string) (map[string]int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	counts := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var ev struct {
			Stage string `json:"stage"`
			Verb  string `json:"verb"`
			User  struct {
				Username string `json:"username"`
			} `json:"user"`
			ObjectRef struct {
				Resource string `json:"resource"`
			} `json:"objectRef"`
		}
		if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.Stage != "ResponseComplete" || ev.User.Username != user {
			continue
		}
		counts[ev.Verb+" "+ev.ObjectRef.Resource]++
	}
	return counts, sc.Err()
}
