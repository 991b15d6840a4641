// Command bench measures the controller against the test world (make
// bench): registration latency, 1,000 Clusters at once, steady-state
// writes and reads next to the by-hand approach, deletion latency and
// memory. It prints a table, writes a plot and ends with one BENCH line.
// It reports; it asserts no time.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cnpg-teleport/cnpg-teleport/test/bench"
	"github.com/cnpg-teleport/cnpg-teleport/test/benchplot"
	"github.com/cnpg-teleport/cnpg-teleport/test/world"
)

func main() {
	cfg := bench.Config{Log: os.Stdout}
	var foreign, png, args string
	var keep bool
	flag.IntVar(&cfg.Sequential, "sequential", 220, "Clusters created (then deleted) one at a time: latency")
	flag.IntVar(&cfg.AtOnce, "clusters", 1000, "Clusters created at once: convergence, steady state, memory")
	flag.StringVar(&foreign, "foreign", "1000,5000", "foreign db resources in Teleport for each steady-state measurement")
	flag.IntVar(&cfg.Secrets, "secrets", 10000, "unrelated Secrets in the apiserver")
	flag.IntVar(&cfg.Resyncs, "resyncs", 5, "resyncs per steady-state measurement, and by-hand syncs")
	flag.DurationVar(&cfg.Resync, "resync-period", 30*time.Second, "the controller's --resync-period")
	flag.IntVar(&cfg.Tsh, "tsh", 20, "of those, the last N time annotate -> visible in tsh db ls instead (tsh in a loop takes a core)")
	flag.StringVar(&png, "plot", "docs/bench.png", "plot to write (relative to the repository root; empty: none)")
	flag.BoolVar(&keep, "keep", false, "keep the run's directory (logs)")
	flag.StringVar(&args, "controller-args", "", "more flags for the controller, space-separated (e.g. --concurrent=8)")
	flag.Parse()
	for _, f := range strings.Split(foreign, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: -foreign:", err)
			os.Exit(2)
		}
		cfg.Foreign = append(cfg.Foreign, n)
	}
	cfg.Args = strings.Fields(args)
	world.Enter()
	dir, err := os.MkdirTemp("", "cnpg-teleport-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	cfg.Dir = dir
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	t0 := time.Now()
	res, err := bench.Run(ctx, cfg)
	if !keep && err == nil {
		_ = os.RemoveAll(dir)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "\nBENCH FAILED after %.0fs: %v\n(logs in %s)\n", time.Since(t0).Seconds(), err, dir)
		os.Exit(1)
	}
	report(res, time.Since(t0))
	if keep {
		fmt.Println("register:", res.Register, "\ndelete:", res.Delete)
	}
	if png != "" {
		path := png
		if !strings.HasPrefix(path, "/") {
			path = world.RepoRoot() + "/" + path
		}
		if err := plot(path, res); err != nil {
			fmt.Fprintln(os.Stderr, "bench: plot:", err)
			os.Exit(1)
		}
		fmt.Println("plot:", png)
	}
	fmt.Println(benchLine(res))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }

func report(r *bench.Result, took time.Duration) {
	c := r.Config
	host, _ := os.Hostname()
	fmt.Printf("\n# cnpg-teleport bench, %s, %s (%d CPUs, %s), run took %.0fs\n", time.Now().UTC().Format("2006-01-02"), host, runtime.NumCPU(), runtime.GOARCH, took.Seconds())
	fmt.Println("| measure | result | goal |")
	fmt.Println("|---|---|---|")
	fmt.Printf("| annotate → rw and ro acknowledged by Teleport (the Registered Event's time), %d Clusters one at a time | p50 %s, p99 %s, max %s | p50 ≤ 100 ms, p99 ≤ 1 s |\n",
		len(r.Register), ms(bench.Percentile(r.Register, 50)), ms(bench.Percentile(r.Register, 99)), ms(bench.Percentile(r.Register, 100)))
	if len(r.Visible) > 0 {
		fmt.Printf("| annotate → both in `tsh db ls`, %d more Clusters (Teleport's agent and cache; `tsh db ls` in a loop, %s a round) | p50 %s, p99 %s | (reported) |\n",
			len(r.Visible), ms(r.TshPoll), ms(bench.Percentile(r.Visible, 50)), ms(bench.Percentile(r.Visible, 99)))
	}
	fmt.Printf("| %d Clusters created at once → all %d db resources in Teleport | %.1f s | ≤ 60 s |\n", c.AtOnce, 2*c.AtOnce, r.Converge.Seconds())
	fmt.Printf("| … Teleport calls spent (per Cluster) | %d (%.1f): %s | |\n", sum(r.ConvergeCalls), float64(sum(r.ConvergeCalls))/float64(c.AtOnce), kv(r.ConvergeCalls))
	fmt.Printf("| … Kubernetes writes spent (per Cluster) | %d (%.1f): %s | |\n", sum(r.ConvergeWrites), float64(sum(r.ConvergeWrites))/float64(c.AtOnce), kv(r.ConvergeWrites))
	fmt.Printf("| … Kubernetes requests by method, Events aside (per Cluster) | %d (%.1f): %s | |\n", sum(r.ConvergeKube), float64(sum(r.ConvergeKube))/float64(c.AtOnce), kv(r.ConvergeKube))
	for _, s := range r.Steady {
		fmt.Printf("| steady state, %d Clusters, %d foreign db resources: %.1f resyncs | Teleport writes %d (Teleport's audit log: %d), Kubernetes writes %d | 0 |\n",
			c.Sequential+c.AtOnce, s.Foreign, s.Resyncs, s.TeleportWrites, s.AuditWrites, sum(s.KubeWrites))
		fmt.Printf("| … Teleport reads per Cluster per resync | %.2f: %s | constant |\n", s.ReadsPerPass, kv(s.Calls))
	}
	fmt.Printf("| by hand (PostSync Job: `tctl create --force` of every db), %d syncs of %d Clusters | Teleport writes %d (%.1fs) | |\n",
		c.Resyncs, c.AtOnce, r.ByHandWrites, r.ByHandTime.Seconds())
	fmt.Printf("| delete → rw and ro deregistered, %d Clusters one at a time | p50 %s, p99 %s | p99 ≤ 1 s |\n",
		len(r.Delete), ms(bench.Percentile(r.Delete, 50)), ms(bench.Percentile(r.Delete, 99)))
	fmt.Printf("| controller peak RSS, %d Clusters and %d unrelated Secrets | %.0f MiB (highest sampled: %s, %.0f MiB: %.0f of the binary's file pages, %.0f anonymous; at the end %.0f MiB, Go heap in use %.0f MiB; CPU over the run %.0f s) | ≤ 150 MiB |\n",
		c.Sequential+c.AtOnce, c.Secrets, r.RSSPeak, r.PeakAt, r.PeakSample.Now, r.PeakSample.File, r.PeakSample.Anon, r.RSS, r.HeapInUse, r.CPU)
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func kv(m map[string]int) string {
	var out []string
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}) {
		out = append(out, fmt.Sprintf("%s %d", k, m[k]))
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

func benchLine(r *bench.Result) string {
	idle, reads := 0, 0.0
	for _, s := range r.Steady {
		idle += s.TeleportWrites + sum(s.KubeWrites)
		reads = max(reads, s.ReadsPerPass)
	}
	return fmt.Sprintf("BENCH latency_p50_ms=%.0f latency_p99_ms=%.0f converge_1000_s=%.1f idle_writes=%d byhand_writes=%d reads_per_cluster_resync=%.2f delete_p99_ms=%.0f rss_mib=%.0f",
		float64(bench.Percentile(r.Register, 50).Microseconds())/1000, float64(bench.Percentile(r.Register, 99).Microseconds())/1000,
		r.Converge.Seconds(), idle, r.ByHandWrites, reads,
		float64(bench.Percentile(r.Delete, 99).Microseconds())/1000, r.RSSPeak)
}

func millis(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d.Microseconds()) / 1000
	}
	return out
}

func plot(path string, r *bench.Result) error {
	lat := benchplot.Panel{Title: "Latency distribution", XLabel: "ms (log)", YLabel: "fraction of Clusters", LogX: true,
		Series: []benchplot.Series{
			benchplot.CDF("annotate -> registered", millis(r.Register)),
			benchplot.CDF("delete -> deregistered", millis(r.Delete)),
		}}
	if len(r.Visible) > 0 {
		lat.Series = append(lat.Series, benchplot.CDF("annotate -> in tsh db ls", millis(r.Visible)))
	}
	conv := benchplot.Series{Name: "db resources in Teleport"}
	for _, p := range r.Curve {
		conv.X, conv.Y = append(conv.X, p.X), append(conv.Y, p.Y)
	}
	curve := benchplot.Panel{Title: fmt.Sprintf("%d Clusters created at once", r.Config.AtOnce), XLabel: "seconds", YLabel: "db resources", Series: []benchplot.Series{conv}}
	return benchplot.WritePNG(path, fmt.Sprintf("cnpg-teleport make bench, %s, %d CPUs", time.Now().UTC().Format("2006-01-02"), runtime.NumCPU()), lat, curve)
}
