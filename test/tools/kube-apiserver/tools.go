//go:build tools

// Package tools pins kube-apiserver (envtest) and kube-controller-manager (garbage
// collector, namespace lifecycle, Job/Deployment/ReplicaSet controllers) for the
// test world; see the Makefile.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
