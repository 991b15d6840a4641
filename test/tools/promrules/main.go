// Command promrules checks Prometheus rule files with Prometheus's own code,
// so that the chart's PrometheusRule is proven by the parser that will load
// it, not by a regular expression: rulefmt.Parse refuses unknown fields, bad
// durations, label names and annotation templates and every expression that
// does not parse (as the Prometheus operator's admission webhook does), and
// the PromQL parser names the metrics each expression selects, so a test can
// compare them with the metrics the controller registers.
//
//	promrules FILE...
//
// It prints one JSON object per rule ({"file", "group", "alert" or "record",
// "expr", "metrics", "matchers"}) and exits 1, with every error on stderr, when a file
// is not a valid rule file. A selector without a fixed metric name (a regular
// expression on __name__, say) is listed by its matchers, which no exported
// metric is named, so a test comparing names refuses it.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"slices"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// Rule is one rule of a checked file, as printed.
type Rule struct {
	File    string   `json:"file"`
	Group   string   `json:"group"`
	Alert   string   `json:"alert,omitempty"`
	Record  string   `json:"record,omitempty"`
	Expr    string   `json:"expr"`
	Metrics []string `json:"metrics"`
	// Matchers are the selectors' other label matchers, as PromQL (controller="cluster").
	Matchers []string `json:"matchers"`
}

func main() {
	log.SetFlags(0)
	if len(os.Args) < 2 {
		log.Fatal("usage: promrules FILE...")
	}
	errs := run(os.Args[1:], os.Stdout)
	for _, err := range errs {
		log.Print(err)
	}
	if len(errs) > 0 {
		os.Exit(1)
	}
}

// run checks every file and prints the rules of the valid ones to out; it
// returns every error of every file.
func run(files []string, out io.Writer) (errs []error) {
	p := parser.NewParser(parser.Options{})
	enc := json.NewEncoder(out)
	for _, f := range files {
		// Legacy names: what every Prometheus, 2.x included, accepts.
		groups, ferrs := rulefmt.ParseFile(f, false, model.LegacyValidation, p, slog.New(slog.DiscardHandler))
		if len(ferrs) > 0 {
			errs = append(errs, ferrs...)
			continue
		}
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				rule, err := describe(p, f, g.Name, r)
				if err == nil {
					err = enc.Encode(rule)
				}
				if err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	return errs
}

// describe lists the metrics the rule's expression selects and the other
// label matchers of its selectors, sorted, each once.
func describe(p parser.Parser, file, group string, r rulefmt.Rule) (Rule, error) {
	expr, err := p.ParseExpr(r.Expr)
	if err != nil { // rulefmt parsed it already; kept for a changed parser
		return Rule{}, fmt.Errorf("%s: group %s: %w", file, group, err)
	}
	rule := Rule{File: file, Group: group, Alert: r.Alert, Record: r.Record, Expr: r.Expr, Metrics: []string{}, Matchers: []string{}}
	for _, sel := range parser.ExtractSelectors(expr) {
		rule.Metrics = append(rule.Metrics, metricName(sel))
		for _, m := range sel {
			if m.Name != model.MetricNameLabel {
				rule.Matchers = append(rule.Matchers, m.String())
			}
		}
	}
	for _, l := range []*[]string{&rule.Metrics, &rule.Matchers} {
		slices.Sort(*l)
		*l = slices.Compact(*l)
	}
	return rule, nil
}

// metricName is the name a selector asks for (__name__="x"), or, when it
// has none fixed, its matchers written out.
func metricName(sel []*labels.Matcher) string {
	for _, m := range sel {
		if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
			return m.Value
		}
	}
	s := "{"
	for i, m := range sel {
		if i > 0 {
			s += ","
		}
		s += m.String()
	}
	return s + "}"
}
