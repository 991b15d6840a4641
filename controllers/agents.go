package controllers

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	"github.com/gravitational/teleport/api/types"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Events of the agent check.
const (
	ReasonAgentServing = "AgentServing"
	ReasonNoAgent      = "NoAgent"
)

var agentsServing = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "cnpg_teleport_database_agents",
	Help: "Teleport database agents serving the db resource (its db_server heartbeats); 0: none does, so `tsh db connect` to it fails.",
}, []string{"namespace", "cluster", "db"})

func init() { metrics.Registry.MustRegister(agentsServing) }

// AgentCheck tells, for every db resource the controller registered,
// whether a Teleport database agent serves it: a db resource no agent picks
// up (no agent's db_service resources selector matches its labels, or its
// agents are gone) looks fine in Kubernetes and fails only at `tsh db
// connect`. Every Period it lists the db_server heartbeats of the
// controller's db resources (one paged, label-filtered Teleport call for all
// Clusters), sets cnpg_teleport_database_agents, and reports on the Cluster
// a Normal AgentServing when a db becomes served and a Warning NoAgent when
// one has been unserved for After (since it was registered, or since its
// last agent left). It runs on the leader.
//
// Its Events are paced (Pace): client-go's recorder starts a goroutine and
// a request per Event, and one check can find thousands of db resources
// served at once (make bench: 1,010 Events in one second when the
// registrations of 1,000 Clusters were first served, the controller's peak
// memory: 8 MB of goroutine stacks and 20 MB of live heap more).
type AgentCheck struct {
	Teleport Teleport
	Recorder events.EventRecorder
	// Labels select the controller's db resources (its ownership labels).
	Labels map[string]string
	After  time.Duration
	Period time.Duration
	Now    func() time.Time
	// Pace spaces the check's Events (nil: eventsPerSecond, a burst as many).
	Pace *rate.Limiter

	mu       sync.Mutex
	dbs      map[string]*agentState    // by db name
	clusters map[k8stypes.UID][]string // each Cluster's db names: a pass touches only its own
}

type agentState struct {
	cluster clusterRef // what Events regard

	labels map[string]string
	since  time.Time // registered, or last seen served
	served bool      // AgentServing reported for the current stretch
	warned bool      // NoAgent reported for the current stretch
}

// clusterRef is a Cluster's identity: an empty Cluster object per db would
// hold its whole zero spec (make bench: 7.7 MB live for 2,440 dbs).
type clusterRef struct {
	Namespace, Name string
	UID             k8stypes.UID
}

// object is what an Event regards.
func (r clusterRef) object() *cnpgv1.Cluster {
	return &cnpgv1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: r.Name, UID: r.UID}}
}

func (a *AgentCheck) now() time.Time {
	if a.Now == nil {
		return time.Now()
	}
	return a.Now()
}

// Track sets the db resources registered for c (replacing its earlier set).
// It runs on every successful pass: it touches c's entries only.
func (a *AgentCheck) Track(c *cnpgv1.Cluster, dbs []types.Database) {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.dbs == nil {
		a.dbs, a.clusters = map[string]*agentState{}, map[k8stypes.UID][]string{}
	}
	names := make([]string, 0, len(dbs))
	for _, db := range dbs {
		names = append(names, db.GetName())
	}
	for _, name := range a.clusters[c.UID] {
		if !slices.Contains(names, name) {
			a.drop(name, c.UID)
		}
	}
	a.clusters[c.UID] = names
	for _, db := range dbs {
		s := a.dbs[db.GetName()]
		if s == nil || s.cluster.UID != c.UID {
			s = &agentState{cluster: clusterRef{c.Namespace, c.Name, c.UID}, since: a.now()}
			a.dbs[db.GetName()] = s
		}
		s.labels = db.GetStaticLabels() // ours carry static labels only; read, never written
	}
}

// Forget stops checking c's db resources (deregistered).
func (a *AgentCheck) Forget(uid k8stypes.UID) {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, name := range a.clusters[uid] {
		a.drop(name, uid)
	}
	delete(a.clusters, uid)
}

// drop forgets one db of the Cluster uid (not a namesake another Cluster
// took since); callers hold a.mu.
func (a *AgentCheck) drop(name string, uid k8stypes.UID) {
	if s := a.dbs[name]; s != nil && s.cluster.UID == uid {
		delete(a.dbs, name)
		agentsServing.DeleteLabelValues(s.cluster.Namespace, s.cluster.Name, name)
	}
}

// Start checks every Period until ctx ends (manager.Runnable).
func (a *AgentCheck) Start(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("agent-check")
	t := time.NewTicker(a.Period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := a.Check(ctx); err != nil && ctx.Err() == nil {
				log.Info("cannot list the database agents' heartbeats; next try in "+a.Period.String(), "error", err.Error())
			}
		}
	}
}

// eventsPerSecond bounds the agent check's Events.
const eventsPerSecond = 50

// agentEvent is an Event the check records once it let go of its lock.
type agentEvent struct {
	cluster                   clusterRef
	typ, reason, action, note string
}

// Check lists the heartbeats once and reports what changed. Its Events are
// recorded after the state is updated, at the pace of Pace; if ctx ends
// first, those left are dropped (the process is stopping).
func (a *AgentCheck) Check(ctx context.Context) error {
	a.mu.Lock()
	n := len(a.dbs)
	a.mu.Unlock()
	if n == 0 {
		return nil // nothing registered: no Teleport call
	}
	servers, err := a.Teleport.DatabaseServers(ctx, a.Labels)
	if err != nil {
		return err
	}
	for _, e := range a.update(servers) {
		if err := a.pace().Wait(ctx); err != nil {
			return err
		}
		a.Recorder.Eventf(e.cluster.object(), nil, e.typ, e.reason, e.action, "%s", e.note)
	}
	return nil
}

func (a *AgentCheck) pace() *rate.Limiter {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.Pace == nil {
		a.Pace = rate.NewLimiter(eventsPerSecond, eventsPerSecond)
	}
	return a.Pace
}

// update sets the metric and each db's state from servers (agents per db
// name) and returns the Events to record.
func (a *AgentCheck) update(servers map[string]int) []agentEvent {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []agentEvent
	nowServed, order := map[clusterRef][]string{}, []clusterRef(nil) // by Cluster: one AgentServing each
	for _, name := range slices.Sorted(maps.Keys(a.dbs)) {
		s := a.dbs[name]
		agents := servers[name]
		agentsServing.WithLabelValues(s.cluster.Namespace, s.cluster.Name, name).Set(float64(agents))
		switch {
		case agents > 0:
			s.since, s.warned = now, false
			if !s.served {
				s.served = true
				if nowServed[s.cluster] == nil {
					order = append(order, s.cluster)
				}
				nowServed[s.cluster] = append(nowServed[s.cluster], name)
			}
		case s.served: // its agents left: the stretch without one starts now
			s.served, s.since = false, now
		case !s.warned && now.Sub(s.since) >= a.After:
			s.warned = true
			out = append(out, agentEvent{s.cluster, corev1.EventTypeWarning, ReasonNoAgent, "CheckAgent " + name,
				fmt.Sprintf("no Teleport database agent has served db %s for %s: `tsh db connect` to it fails. Likely no agent's db_service "+
					"resources selector matches its labels %s (see config/teleport/db-service.yaml), or its agents are down "+
					"(an agent killed, or stopped with SIGTERM, stays listed until its heartbeat expires, up to 10 min)",
					name, a.After, labelList(s.labels))})
		}
	}
	for _, c := range order {
		out = append(out, servingEvents(c, nowServed[c], servers)...)
	}
	return out
}

// servingEvents reports the dbs of one Cluster that one check found newly
// served: one Event for all (a Cluster's rw and ro are usually picked up
// together: make bench, 1,000 Events fewer while 1,000 Clusters register),
// its action naming them all, because client-go folds Events of the same
// object, reason and action into a series that shows only the first note.
// An action is at most 128 characters (events.k8s.io): past that, one Event
// a db.
func servingEvents(c clusterRef, names []string, servers map[string]int) []agentEvent {
	action := "CheckAgent " + strings.Join(names, ",")
	if len(names) > 1 && len(action) <= maxEventAction {
		notes := make([]string, len(names))
		for i, name := range names {
			notes[i] = fmt.Sprintf("%s by %d", name, servers[name])
		}
		return []agentEvent{{c, corev1.EventTypeNormal, ReasonAgentServing, action,
			fmt.Sprintf("dbs %s are served by Teleport database agents (%s)", strings.Join(names, ", "), strings.Join(notes, ", "))}}
	}
	out := make([]agentEvent, 0, len(names))
	for _, name := range names {
		out = append(out, agentEvent{c, corev1.EventTypeNormal, ReasonAgentServing, "CheckAgent " + name,
			fmt.Sprintf("db %s is served by %d Teleport database agent(s)", name, servers[name])})
	}
	return out
}

// maxEventAction is the longest action events.k8s.io accepts.
const maxEventAction = 128

// labelList prints labels sorted, k=v comma-separated.
func labelList(l map[string]string) string {
	parts := make([]string, 0, len(l))
	for _, k := range slices.Sorted(maps.Keys(l)) {
		parts = append(parts, k+"="+l[k])
	}
	return fmt.Sprintf("{%s}", strings.Join(parts, ", "))
}
