//go:build tools

// Package tools pins etcd for the test world (envtest); see the Makefile.
package tools

import _ "go.etcd.io/etcd/server/v3"
