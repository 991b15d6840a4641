//go:build tools

// Package tools pins CloudNativePG's manager (operator, instance manager, pgbouncer
// runner) for the test world. It cannot live in the project module: CNPG v1.30.0
// needs its own k8s.io versions (v0.36.x); see hack/tools.sh.
package tools

import _ "github.com/cloudnative-pg/cloudnative-pg/cmd/manager"
