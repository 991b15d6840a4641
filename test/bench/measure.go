package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	"github.com/cnpg-teleport/cnpg-teleport/controllers"
)

// metrics is one scrape of the controller's /metrics: sample -> value, the
// sample named as in the exposition (name{label="v",...}).
type metrics map[string]float64

func scrape(ctx context.Context, addr string) (metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: %s", resp.Status)
	}
	return parseMetrics(resp.Body)
}

func parseMetrics(r io.Reader) (metrics, error) {
	m := metrics{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	return m, sc.Err()
}

// sum adds the samples of name whose labels include every label given ("k=v").
func (m metrics) sum(name string, labels ...string) float64 {
	total := 0.0
	for k, v := range m {
		metric, rest, _ := strings.Cut(k, "{")
		if metric != name {
			continue
		}
		ok := true
		for _, l := range labels {
			lk, lv, _ := strings.Cut(l, "=")
			if !strings.Contains(rest, lk+`="`+lv+`"`) {
				ok = false
				break
			}
		}
		if ok {
			total += v
		}
	}
	return total
}

// calls is the number of Teleport API calls by method between two scrapes.
func calls(before, after metrics) map[string]int {
	out := map[string]int{}
	for _, m := range []string{"GetDatabase", "ListDatabases", "CreateDatabase", "UpdateDatabase", "DeleteDatabase", "DatabaseClientCAs", "ListRoles", "DatabaseServers"} {
		if n := int(after.sum(teleportCalls, "method="+m) - before.sum(teleportCalls, "method="+m)); n != 0 {
			out[m] = n
		}
	}
	return out
}

const teleportCalls = "cnpg_teleport_teleport_requests_total"

// kubeRequests is the number of Kubernetes API requests by HTTP method
// between two scrapes (client-go's rest_client_requests_total).
func kubeRequests(before, after metrics) map[string]int {
	out := map[string]int{}
	for _, m := range []string{"GET", "LIST", "POST", "PUT", "PATCH", "DELETE"} {
		if n := int(after.sum("rest_client_requests_total", "method="+m) - before.sum("rest_client_requests_total", "method="+m)); n != 0 {
			out[m] = n
		}
	}
	return out
}

// Writes and reads of Teleport's API, by method name.
func teleportWrites(c map[string]int) int {
	return c["CreateDatabase"] + c["UpdateDatabase"] + c["DeleteDatabase"]
}

func teleportReads(c map[string]int) int {
	return c["GetDatabase"] + c["ListDatabases"] + c["DatabaseClientCAs"] + c["ListRoles"] + c["DatabaseServers"]
}

func diff(before, after map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// saveHeapProfile writes the controller's heap profile to path (go tool
// pprof -top -sample_index=inuse_space path).
func saveHeapProfile(ctx context.Context, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+pprofAddr+"/debug/pprof/heap", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// Resident is a process's resident set (MiB): its peak (VmHWM), and now in
// all, of its binary and other files (RssFile: the pages of the 100 MB
// binary it touched, shared and clean) and anonymous (RssAnon: the Go heap,
// stacks and runtime).
type Resident struct{ Peak, Now, File, Anon float64 }

// memory reads a process's resident set from /proc.
func memory(pid int) (Resident, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Resident{}, err
	}
	var m Resident
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmHWM:":
			m.Peak = kb / 1024
		case "VmRSS:":
			m.Now = kb / 1024
		case "RssFile:":
			m.File = kb / 1024
		case "RssAnon:":
			m.Anon = kb / 1024
		}
	}
	if m.Peak == 0 {
		return Resident{}, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
	}
	return m, nil
}

// cpuSeconds reads the CPU time (user and system) a process has used.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command's name, "(...)": state first, then
	// utime and stime at 12 and 13 (man 5 proc), in USER_HZ (100 a second).
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return (utime + stime) / 100, nil
}

// events records, per regarded object, when the controller reported each
// reason (the Event's eventTime, set by the controller as it records it).
type events struct {
	mu      sync.Mutex
	at      map[types.UID]map[string][]time.Time
	all     []eventRecord // every Event, in arrival order
	changed chan struct{}
}

type eventRecord struct {
	at          time.Time
	typ, reason string
	dbs         int // the db resources an AgentServing names (its action: "CheckAgent a,b")
}

// servedDBs counts the db resources the AgentServing Events name: one
// Event names every db of its Cluster one check found served.
func (e *events) servedDBs() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, r := range e.all {
		n += r.dbs
	}
	return n
}

// between counts the Events recorded in [from, to) by "Type/Reason".
func (e *events) between(from, to time.Time) map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]int{}
	for _, r := range e.all {
		if !r.at.Before(from) && r.at.Before(to) {
			out[r.typ+"/"+r.reason]++
		}
	}
	return out
}

func watchEvents(ctx context.Context, informers cache.Cache) (*events, error) {
	e := &events{at: map[types.UID]map[string][]time.Time{}, changed: make(chan struct{})}
	inf, err := informers.GetInformer(ctx, &eventsv1.Event{})
	if err != nil {
		return nil, err
	}
	_, err = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{AddFunc: func(o any) {
		ev, ok := o.(*eventsv1.Event)
		if !ok {
			return
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.at[ev.Regarding.UID] == nil {
			e.at[ev.Regarding.UID] = map[string][]time.Time{}
		}
		e.at[ev.Regarding.UID][ev.Reason] = append(e.at[ev.Regarding.UID][ev.Reason], ev.EventTime.Time)
		rec := eventRecord{at: ev.EventTime.Time, typ: ev.Type, reason: ev.Reason}
		if names, ok := strings.CutPrefix(ev.Action, "CheckAgent "); ok && ev.Reason == controllers.ReasonAgentServing {
			rec.dbs = len(strings.Split(names, ","))
		}
		e.all = append(e.all, rec)
		close(e.changed)
		e.changed = make(chan struct{})
	}})
	return e, err
}

// waitN waits until uid has n Events of reason and returns the last one's time.
func (e *events) waitN(ctx context.Context, uid types.UID, reason string, n int, timeout time.Duration) (time.Time, error) {
	deadline := time.After(timeout)
	for {
		e.mu.Lock()
		times, ch := e.at[uid][reason], e.changed
		e.mu.Unlock()
		if len(times) >= n {
			return slices.MaxFunc(times, func(a, b time.Time) int { return a.Compare(b) }), nil
		}
		select {
		case <-ch:
		case <-deadline:
			return time.Time{}, fmt.Errorf("%d %s Events for %s: %d within %s", n, reason, uid, len(times), timeout)
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}

// Percentile is the p-th percentile (nearest rank) of ds, 0 when empty.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[min(max(rank, 0), len(s)-1)]
}

// agentsSettled: the agent check has seen an agent serve every db resource
// the controller registered (cnpg_teleport_database_agents >= 1 for each).
func agentsSettled(m metrics) error {
	registered := int(m.sum("cnpg_teleport_registered_databases"))
	served, unserved := 0, 0
	for k, v := range m {
		if strings.HasPrefix(k, "cnpg_teleport_database_agents{") {
			if v >= 1 {
				served++
			} else {
				unserved++
			}
		}
	}
	if served < registered || unserved > 0 {
		return fmt.Errorf("%d of %d db resources served (%d unserved)", served, registered, unserved)
	}
	return nil
}
