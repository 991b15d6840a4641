//go:build tools

// Package tools pins kube-apiserver for the test world (envtest); see the Makefile.
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
