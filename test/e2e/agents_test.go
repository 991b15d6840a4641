package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnpg-teleport/cnpg-teleport/controllers"
	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
	"github.com/cnpg-teleport/cnpg-teleport/test/world"
)

// noAgentAfter is the controller's --no-agent-after in TestAgentServing.
const noAgentAfter = 5 * time.Second

// TestAgentServing proves the agent check against the real Teleport and its
// real database agents: Teleport here runs without its own agent, and one
// agent of the test's serves the db resources labelled tier=served. A
// Cluster labelled tier=served gets AgentServing (and `tsh db connect`
// works), one labelled tier=other gets NoAgent naming its labels (and `tsh
// db connect` fails); when the agent shuts down (gracefully: its heartbeats
// go with it) the served one gets NoAgent, and AgentServing again once the
// agent is back. The metric follows each step.
func TestAgentServing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const ns = "agents"
	w := world.Start(t, world.Options{})
	tp := startTeleport(t, world.TeleportOptions{NoAgent: true})
	agent, err := tp.StartAgent(ctx, "tier-served", map[string]string{"cnpg-teleport.io/managed-by": "cnpg-teleport", "tier": "served"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log("agent log:\n" + agent.Logs())
		}
		agent.Stop()
	})
	const metrics = "127.0.0.1:18080"
	startController(t, ctx, w, tp, ns, "--annotation-labels=tier", "--no-agent-after="+noAgentAfter.String(), "--resync-period=10s")

	for name, tier := range map[string]string{"served": "served", "lonely": "other"} {
		c := world.NewCluster(ns, name, 1)
		c.Annotations = map[string]string{dbspec.AnnotationRegister: "true", dbspec.AnnotationLabels: "tier=" + tier}
		if err := w.Client.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	served, lonely := "k1-"+ns+"-served-rw", "k1-"+ns+"-lonely-rw"
	registered := map[string]time.Time{}
	world.Eventually(t, 3*time.Minute, "both registered", func() error {
		out, err := tp.Tctl(ctx, "", "get", "db", "--format=text")
		if err != nil {
			return err
		}
		for _, db := range []string{served, lonely} {
			if _, ok := registered[db]; !ok && strings.Contains(string(out), db) {
				registered[db] = time.Now()
			}
		}
		if len(registered) < 2 {
			return fmt.Errorf("registered: %v", registered)
		}
		return nil
	})

	e := agentEvents{t: t, ctx: ctx, w: w, ns: ns}
	e.wait("served", "Normal", controllers.ReasonAgentServing, served, 1, 30*time.Second)
	t.Logf("%s: AgentServing %s after it was registered", served, time.Since(registered[served]).Round(100*time.Millisecond))
	note := e.wait("lonely", "Warning", controllers.ReasonNoAgent, lonely, 1, noAgentAfter+30*time.Second)
	t.Logf("%s: NoAgent %s after it was registered: %s", lonely, time.Since(registered[lonely]).Round(100*time.Millisecond), note)
	if !strings.Contains(note, "tier=other") || !strings.Contains(note, "selector") {
		t.Errorf("NoAgent note names neither the labels nor the selector: %s", note)
	}
	if n := e.count("lonely", controllers.ReasonAgentServing, lonely); n != 0 {
		t.Errorf("AgentServing for %s, which no agent serves", lonely)
	}
	waitAgents(t, metrics, ns, "served", served, "1")
	waitAgents(t, metrics, ns, "lonely", lonely, "0")

	// What the Events say is what `tsh db connect` finds.
	u, err := tp.User(ctx, "agents", []string{"teleport_read"}, []string{"app"})
	if err != nil {
		t.Fatal(err)
	}
	world.Eventually(t, time.Minute, "tsh db connect "+served, func() error {
		out, err := sql(ctx, u, served, "teleport_read", "SELECT 'ok=' || 1;")
		if err != nil || !strings.Contains(out, "ok=1") {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	})
	if out, err := sql(ctx, u, lonely, "teleport_read", "SELECT 'ok=' || 1;"); err == nil {
		t.Errorf("tsh db connect %s worked with no agent serving it: %s", lonely, out)
	} else {
		t.Logf("tsh db connect %s: %s", lonely, firstLine(strings.TrimSpace(out)))
	}

	// The agent shuts down: its heartbeats go, the bound starts.
	t0 := time.Now()
	if err := agent.Shutdown(); err != nil {
		t.Fatal(err)
	}
	e.wait("served", "Warning", controllers.ReasonNoAgent, served, 1, noAgentAfter+30*time.Second)
	t.Logf("%s: NoAgent %s after its agent shut down", served, time.Since(t0).Round(100*time.Millisecond))
	waitAgents(t, metrics, ns, "served", served, "0")

	// It comes back: AgentServing again.
	t0 = time.Now()
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	e.wait("served", "Normal", controllers.ReasonAgentServing, served, 2, 30*time.Second)
	t.Logf("%s: AgentServing again %s after its agent started", served, time.Since(t0).Round(100*time.Millisecond))
	waitAgents(t, metrics, ns, "served", served, "1")
	if n := e.count("lonely", controllers.ReasonNoAgent, lonely); n != 1 {
		t.Errorf("%d NoAgent Events for %s, want 1 (once per stretch)", n, lonely)
	}
}

type agentEvents struct {
	t   *testing.T
	ctx context.Context
	w   *world.World
	ns  string
}

// count is how many times an Event with reason about db was reported on the
// Cluster (a repeated Event is one object with a series count).
func (e agentEvents) count(cluster, reason, db string) int {
	e.t.Helper()
	var list eventsv1.EventList
	if err := e.w.Client.List(e.ctx, &list, client.InNamespace(e.ns)); err != nil {
		e.t.Fatal(err)
	}
	n, _ := countEvents(list.Items, cluster, "", reason, db)
	return n
}

// countEvents counts the Events (with their series) of reason about db on
// the Cluster, of eventType unless it is "", and returns the last one's note.
func countEvents(events []eventsv1.Event, cluster, eventType, reason, db string) (n int, note string) {
	for _, ev := range events {
		if ev.Regarding.Name != cluster || ev.Reason != reason || !strings.Contains(ev.Note, "db "+db+" ") ||
			(eventType != "" && ev.Type != eventType) {
			continue
		}
		note = ev.Note
		if ev.Series != nil {
			n += int(ev.Series.Count)
		} else {
			n++
		}
	}
	return n, note
}

// wait waits until the reason about db has been reported times times, and
// returns a note of it. Count and note come from one list: from two, an Event
// arriving between them was counted with no note (make test, 2026-12-05).
func (e agentEvents) wait(cluster, eventType, reason, db string, times int, within time.Duration) string {
	e.t.Helper()
	var note string
	world.Eventually(e.t, within, fmt.Sprintf("%s %s about %s (%d)", eventType, reason, db, times), func() error {
		var list eventsv1.EventList
		if err := e.w.Client.List(e.ctx, &list, client.InNamespace(e.ns)); err != nil {
			return err
		}
		var n int
		if n, note = countEvents(list.Items, cluster, eventType, reason, db); n < times {
			return fmt.Errorf("reported %d times", n)
		}
		return nil
	})
	return note
}

// waitAgents waits until cnpg_teleport_database_agents of db is want.
func waitAgents(t *testing.T, addr, ns, cluster, db, want string) {
	t.Helper()
	sample := fmt.Sprintf(`cnpg_teleport_database_agents{cluster=%q,db=%q,namespace=%q}`, cluster, db, ns)
	world.Eventually(t, 15*time.Second, sample+" = "+want, func() error {
		v, err := metricValue(addr, sample)
		if err != nil {
			return err
		}
		if v != want {
			return fmt.Errorf("%s", v)
		}
		return nil
	})
}

// waitAgentsSettled waits until the agent check of each controller (by
// metrics address) has seen an agent serve every db resource it registered:
// its one-time AgentServing Events are then behind, not in a count of the
// writes that follow.
func waitAgentsSettled(t *testing.T, addrs ...string) {
	t.Helper()
	for _, addr := range addrs {
		world.Eventually(t, time.Minute, "the agent check at "+addr+" reports every db served", func() error {
			body, err := metricsBody(addr)
			if err != nil {
				return err
			}
			registered, served, unserved := 0.0, 0, 0
			for _, l := range strings.Split(body, "\n") {
				f := strings.Fields(l)
				if len(f) != 2 {
					continue
				}
				v, _ := strconv.ParseFloat(f[1], 64)
				switch {
				case f[0] == "cnpg_teleport_registered_databases":
					registered = v
				case strings.HasPrefix(f[0], "cnpg_teleport_database_agents{") && v >= 1:
					served++
				case strings.HasPrefix(f[0], "cnpg_teleport_database_agents{"):
					unserved++
				}
			}
			if float64(served) < registered || unserved > 0 {
				return fmt.Errorf("%d of %.0f db resources served, %d unserved", served, registered, unserved)
			}
			return nil
		})
	}
}
