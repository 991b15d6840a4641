//go:build tools

// Package tools pins Helm for the chart tests (helm lint, template, install); see hack/tools.sh.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
