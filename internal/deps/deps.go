//go:build tools

// Package deps keeps modules the next slices import (Teleport API client,
// Prometheus) pinned in go.mod until code imports them.
package deps

import (
	_ "github.com/gravitational/teleport/api/client"
	_ "github.com/prometheus/client_golang/prometheus"
)
