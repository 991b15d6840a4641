package chart

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/cnpg-teleport/cnpg-teleport/test/world"
)

// TestChartMonitoring: nothing of the Prometheus operator's is rendered
// unless asked for; asked for, the ServiceMonitor scrapes the metrics
// Service's port. (test/e2e TestChartInstall installs both objects against
// the operator's real CRDs; TestChartAlerts checks the rules.)
func TestChartMonitoring(t *testing.T) {
	objs := render(t)
	for _, o := range objs {
		if k := o.GetKind(); k == "ServiceMonitor" || k == "PrometheusRule" {
			t.Fatalf("%s rendered while disabled", k)
		}
	}
	objs = render(t, "metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true")
	kinds := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		kinds[o.GetKind()] = o
	}
	for _, k := range []string{"Service", "ServiceMonitor", "PrometheusRule"} {
		if kinds[k] == nil {
			t.Fatalf("no %s", k)
		}
	}
	port, _, _ := unstructured.NestedSlice(kinds["ServiceMonitor"].Object, "spec", "endpoints")
	if len(port) != 1 || port[0].(map[string]any)["port"] != "metrics" {
		t.Errorf("ServiceMonitor endpoints %v", port)
	}
}

// TestChartAlerts: the PrometheusRule's rules load in Prometheus (its own
// rule parser and PromQL parser, test/tools/promrules), and every metric an
// alert selects is one the binary registers: cnpg-teleport's own or
// controller-runtime's at the version go.mod pins; a controller= matcher
// names a controller the binary runs. Names are read from the Go source
// the binary is built from, so a renamed metric fails here.
func TestChartAlerts(t *testing.T) {
	rules, err := checkRules(t, prometheusRuleSpec(t))
	if err != nil {
		t.Fatal(err)
	}
	exported := registeredMetrics(t)
	named := controllerNames(t)
	alerts := 0
	for _, r := range rules {
		if r.Alert == "" {
			t.Errorf("recording rule %s: the chart ships alerts only", r.Record)
			continue
		}
		alerts++
		if len(r.Metrics) == 0 {
			t.Errorf("alert %s selects no metric: %s", r.Alert, r.Expr)
		}
		for _, m := range r.Metrics {
			if !exported[m] {
				t.Errorf("alert %s selects %s, which the binary does not register", r.Alert, m)
			}
		}
		for _, m := range r.Matchers {
			if c, ok := strings.CutPrefix(m, "controller="); ok && !named[strings.Trim(c, `"`)] {
				t.Errorf("alert %s: %s names no controller of the binary (it runs %v)", r.Alert, m, named)
			}
		}
		t.Logf("alert %s: metrics %v, matchers %v", r.Alert, r.Metrics, r.Matchers)
	}
	if alerts != 3 {
		t.Errorf("%d alerts, want 3 (Teleport errors, reconcile errors, identity conflict)", alerts)
	}
}

// TestChartAlertsChecker: the checker refuses what Prometheus refuses, so
// TestChartAlerts passing means the rules were really parsed.
func TestChartAlertsChecker(t *testing.T) {
	const rule = "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: %s\n    annotations:\n      summary: %s\n"
	for name, c := range map[string]struct{ expr, summary, want string }{
		"unbalanced parenthesis": {expr: "sum(rate(x_total[5m])", summary: "s", want: "could not parse expression"},
		"unknown function":       {expr: "rates(x_total[5m]) > 0", summary: "s", want: "unknown function"},
		"broken template":        {expr: "x > 0", summary: `"{{ $labels.x "`, want: "summary"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := checkRules(t, fmt.Appendf(nil, rule, c.expr, c.summary))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want an error with %q, got %v", c.want, err)
			}
		})
	}
}

// prometheusRuleSpec renders the chart with the PrometheusRule on and
// returns its spec as a Prometheus rule file (the operator hands Prometheus
// the spec's groups as they are).
func prometheusRuleSpec(t *testing.T) []byte {
	t.Helper()
	for _, o := range render(t, "metrics.prometheusRule.enabled=true") {
		if o.GetKind() == "PrometheusRule" {
			raw, err := yaml.Marshal(o.Object["spec"])
			if err != nil {
				t.Fatal(err)
			}
			return raw
		}
	}
	t.Fatal("no PrometheusRule rendered")
	return nil
}

// checkedRule is one line of the checker's output.
type checkedRule struct {
	Group, Alert, Record, Expr string
	Metrics, Matchers          []string
}

// checkRules runs the rule checker (hack/tools.sh promrules) on a rule file;
// an invalid file is an error carrying the checker's messages.
func checkRules(t *testing.T, ruleFile []byte) ([]checkedRule, error) {
	t.Helper()
	dir, err := world.ToolDir("promrules")
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(f, ruleFile, 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	cmd := exec.Command(filepath.Join(dir, "promrules"), f)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("promrules: %w\n%s\n%s", err, errb.String(), ruleFile)
	}
	var rules []checkedRule
	for dec := json.NewDecoder(&out); ; {
		var r checkedRule
		if err := dec.Decode(&r); errors.Is(err, io.EOF) {
			return rules, nil
		} else if err != nil {
			t.Fatalf("promrules output: %v", err)
		}
		rules = append(rules, r)
	}
}

// registeredMetrics are the names of the metrics the binary registers with
// prometheus.*Opts literals: in the project's controllers, and in
// controller-runtime's controller metrics at the pinned version.
func registeredMetrics(t *testing.T) map[string]bool {
	t.Helper()
	cr, err := world.ModuleDir("sigs.k8s.io/controller-runtime")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, dir := range []string{
		filepath.Join(world.RepoRoot(), "controllers"),
		filepath.Join(cr, "pkg", "internal", "controller", "metrics"),
	} {
		n := 0
		for _, f := range goFiles(t, dir) {
			ast.Inspect(f, func(node ast.Node) bool {
				if name := metricOpts(node); name != "" {
					names[name] = true
					n++
				}
				return true
			})
		}
		if n == 0 {
			t.Fatalf("no metric registered in %s: the source moved?", dir)
		}
	}
	return names
}

// metricOpts is the full name (namespace_subsystem_name) a
// prometheus.XxxOpts literal gives its metric, or "" for any other node.
func metricOpts(node ast.Node) string {
	lit, ok := node.(*ast.CompositeLit)
	if !ok {
		return ""
	}
	sel, ok := lit.Type.(*ast.SelectorExpr)
	if !ok || !strings.HasSuffix(sel.Sel.Name, "Opts") {
		return ""
	}
	if pkg, ok := sel.X.(*ast.Ident); !ok || pkg.Name != "prometheus" {
		return ""
	}
	fields := map[string]string{}
	for _, e := range lit.Elts {
		kv, ok := e.(*ast.KeyValueExpr)
		if !ok {
			continue
		}
		key, _ := kv.Key.(*ast.Ident)
		val, _ := kv.Value.(*ast.BasicLit)
		if key != nil && val != nil && val.Kind == token.STRING {
			fields[key.Name], _ = strconv.Unquote(val.Value)
		}
	}
	if fields["Name"] == "" {
		return ""
	}
	var parts []string
	for _, k := range []string{"Namespace", "Subsystem", "Name"} {
		if fields[k] != "" {
			parts = append(parts, fields[k])
		}
	}
	return strings.Join(parts, "_")
}

// controllerNames are the names the project's controllers are built with
// (Named("cluster")): the controller label of controller-runtime's metrics.
func controllerNames(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	for _, f := range goFiles(t, filepath.Join(world.RepoRoot(), "controllers")) {
		ast.Inspect(f, func(node ast.Node) bool {
			call, ok := node.(*ast.CallExpr)
			if !ok || len(call.Args) != 1 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			lit, isLit := call.Args[0].(*ast.BasicLit)
			if ok && isLit && sel.Sel.Name == "Named" && lit.Kind == token.STRING {
				name, _ := strconv.Unquote(lit.Value)
				names[name] = true
			}
			return true
		})
	}
	if len(names) == 0 {
		t.Fatal("no Named controller in controllers/")
	}
	return names
}

// goFiles parses the non-test Go files of dir.
func goFiles(t *testing.T, dir string) []*ast.File {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no Go files in %s: %v", dir, err)
	}
	fset := token.NewFileSet()
	var files []*ast.File
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	return files
}
