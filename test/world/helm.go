package world

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// ChartDir is the repository's Helm chart.
func ChartDir() string { return filepath.Join(RepoRoot(), "charts", "cnpg-teleport") }

// Helm runs the world's helm (hack/tools.sh helm) with its cache, config
// and data homes under home, so nothing outside the test is read or written.
// It returns stdout; a failure carries stderr.
func Helm(ctx context.Context, home string, args ...string) ([]byte, error) {
	dir, err := ToolDir("helm")
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(dir, "helm"), args...)
	cmd.Env = append(cmd.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"), "HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"), "KUBECONFIG="+filepath.Join(home, "no-kubeconfig"))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("helm %s: %w\n%s%s", strings.Join(args, " "), err, errb.String(), out.String())
	}
	return out.Bytes(), nil
}

// Manifests splits a multi-document YAML stream (helm template, helm get
// manifest) into objects; empty documents are skipped.
func Manifests(stream []byte) ([]*unstructured.Unstructured, error) {
	var objs []*unstructured.Unstructured
	for _, doc := range strings.Split("\n"+string(stream), "\n---") {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			return nil, fmt.Errorf("%w in\n%s", err, doc)
		}
		if len(u.Object) == 0 {
			continue
		}
		objs = append(objs, u)
	}
	return objs, nil
}
