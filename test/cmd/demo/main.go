// Command demo runs the whole cnpg-teleport chain on one machine, no
// Kubernetes cluster needed (make demo, make demo-verify): the test world
// (kube-apiserver, etcd, kube-controller-manager, cert-manager, the CNPG
// operator and a kubelet running its PostgreSQL, Teleport), the controller
// binary, a sample annotated Cluster, then its deletion.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	eventsv1 "k8s.io/api/events/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/cnpg-teleport/cnpg-teleport/test/world"
)

const ns, name = "default", "demo"

func main() {
	pause := flag.Bool("pause", false, "wait for Enter between steps")
	flag.Parse()
	world.Enter()
	d := &demo{pause: *pause, in: bufio.NewReader(os.Stdin), t0: time.Now()}
	err := d.run(context.Background())
	if err != nil {
		if d.w != nil {
			fmt.Fprintln(os.Stderr, d.w.Logs())
		}
		if d.tp != nil {
			fmt.Fprintln(os.Stderr, "===== teleport (tail) =====\n"+d.tp.Logs())
		}
		fmt.Fprintf(os.Stderr, "\nDEMO FAILED after %.1fs: %v\n", time.Since(d.t0).Seconds(), err)
	}
	d.cleanup()
	if err != nil {
		os.Exit(1)
	}
	fmt.Printf("\nDEMO OK in %.1fs\n", time.Since(d.t0).Seconds())
}

type demo struct {
	pause bool
	in    *bufio.Reader
	t0    time.Time
	dir   string
	w     *world.World
	tp    *world.Teleport
}

func (d *demo) cleanup() {
	if d.tp != nil {
		d.tp.Stop()
	}
	if d.w != nil {
		d.w.Stop()
	}
}

// step runs one step, printing its name and time.
func (d *demo) step(title string, f func() error) error {
	fmt.Printf("\n==> %s\n", title)
	t := time.Now()
	err := f()
	fmt.Printf("    [%s: %.2fs]\n", map[bool]string{true: "ok", false: "FAILED"}[err == nil], time.Since(t).Seconds())
	if err == nil && d.pause {
		fmt.Print("    (Enter to continue) ")
		_, _ = d.in.ReadString('\n')
	}
	if err != nil {
		return fmt.Errorf("%s: %w", title, err)
	}
	return nil
}

func show(out []byte) {
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		fmt.Println("    | " + l)
	}
}

func (d *demo) run(ctx context.Context) error {
	var err error
	if d.dir, err = os.MkdirTemp("", "cnpg-teleport-demo"); err != nil {
		return err
	}
	var alice *world.TshUser
	var cluster cnpgv1.Cluster
	steps := []struct {
		title string
		f     func() error
	}{
		{"start the world: kube-apiserver + etcd, kube-controller-manager, cert-manager, CNPG operator (webhooks), kubelet", func() error {
			d.w, err = world.StartWorld(d.dir, world.Options{})
			return err
		}},
		{"start Teleport v13.3.8 (auth, proxy, database agent)", func() error {
			d.tp, err = world.StartTeleport(d.dir + "/teleport")
			return err
		}},
		{"start the controller (least-privilege Teleport identity, kube cluster 'kind')", func() error {
			id, err := d.tp.ControllerIdentity(ctx, "cnpg-teleport", time.Hour, "kind")
			if err != nil {
				return err
			}
			_, err = d.w.StartController("cnpg-teleport", "--teleport-addr="+d.tp.AuthAddr, "--identity-file="+id,
				"--kube-cluster=kind", "--annotation-labels=env,team", "--metrics-bind-address=127.0.0.1:8080", "--health-probe-bind-address=127.0.0.1:8081",
				"--resync-period=30s")
			return err
		}},
		{"kubectl apply -f config/samples/cluster.yaml (annotated, 3 instances; CNPG runs it)", func() error {
			raw, err := os.ReadFile(world.RepoRoot() + "/config/samples/cluster.yaml")
			if err != nil {
				return err
			}
			if err := yaml.UnmarshalStrict(raw, &cluster); err != nil {
				return err
			}
			show(raw)
			// The world's kubelet runs the host's PostgreSQL: the image names its major.
			cluster.Spec.ImageName = world.PostgresImage()
			fmt.Printf("    (spec.imageName: %s, the host's PostgreSQL)\n", cluster.Spec.ImageName)
			return d.w.Client.Create(ctx, &cluster)
		}},
		{"CNPG: Cluster in healthy state (primary + 2 streaming replicas), trusting Teleport's db CA", func() error {
			c, err := d.w.WaitClusterHealthy(ctx, ns, name, 4*time.Minute)
			if err != nil {
				return err
			}
			fmt.Printf("    | %s: %d/%d ready, primary %s\n", c.Status.Phase, c.Status.ReadyInstances, c.Spec.Instances, c.Status.CurrentPrimary)
			fmt.Printf("    | spec.certificates.clientCASecret: %s (CNPG runs %s)\n", c.Spec.Certificates.ClientCASecret, c.Status.Certificates.ClientCASecret)
			for _, l := range c.Spec.PostgresConfiguration.PgHBA {
				fmt.Printf("    | pg_hba: %s\n", l)
			}
			return nil
		}},
		{"tctl get db: the controller registered rw and ro (verify-full, the server CA, labels)", func() error {
			return poll(30*time.Second, func() error {
				out, err := d.tp.Tctl(ctx, "", "get", "db", "--format=json")
				if err != nil {
					return err
				}
				if !bytes.Contains(out, []byte("kind-default-demo-rw")) || !bytes.Contains(out, []byte("kind-default-demo-ro")) {
					return errors.New("not registered yet")
				}
				// tctl prints tls.mode as its enum number: 0 is verify-full.
				summary := exec.CommandContext(ctx, "jq", "-r", `.[] | "name: \(.metadata.name)\n  uri: \(.spec.uri)\n  tls.mode: \(.spec.tls.mode // 0) (\(if (.spec.tls.mode // 0) == 0 then "verify-full" else "NOT verify-full" end))\n  tls.ca_cert: \(.spec.tls.ca_cert | split("\n")[1][0:40])... (the server CA)\n  labels: \(.metadata.labels | to_entries | map("\(.key)=\(.value)") | join(" "))"`)
				summary.Stdin = bytes.NewReader(out)
				sum, err := summary.CombinedOutput()
				if err != nil {
					return fmt.Errorf("jq: %w: %s", err, sum)
				}
				show(sum)
				return nil
			})
		}},
		{"is an agent serving them? Events AgentServing, metric cnpg_teleport_database_agents", func() error {
			return poll(30*time.Second, func() error {
				var list eventsv1.EventList
				if err := d.w.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
					return err
				}
				var notes []string
				for _, e := range list.Items {
					if e.Regarding.Name == name && (e.Reason == "AgentServing" || e.Reason == "NoAgent") {
						notes = append(notes, e.Type+" "+e.Reason+": "+e.Note)
					}
				}
				if len(notes) < 2 {
					return fmt.Errorf("agent Events so far: %v", notes)
				}
				metrics, err := httpGet(ctx, "http://127.0.0.1:8080/metrics")
				if err != nil {
					return err
				}
				for _, l := range strings.Split(metrics, "\n") {
					if strings.HasPrefix(l, "cnpg_teleport_database_agents{") {
						notes = append(notes, l)
					}
				}
				show([]byte(strings.Join(notes, "\n") + "\n"))
				return nil
			})
		}},
		{"tsh db ls (as alice) and tsh db connect --db-user=teleport_read: SELECT", func() error {
			if alice, err = d.tp.User(ctx, "alice", []string{"teleport_read", "teleport_write"}, []string{"app"}); err != nil {
				return err
			}
			if out, err := alice.Tsh(ctx, "", "db", "ls", "-v"); err == nil {
				show(out)
			}
			return poll(30*time.Second, func() error {
				out, err := alice.Query(ctx, "kind-default-demo-rw", "teleport_read", "app",
					"SELECT 'connected as ' || current_user || ' to ' || inet_server_addr() || ', in recovery: ' || pg_is_in_recovery();")
				if err != nil {
					return err
				}
				show([]byte(out))
				return nil
			})
		}},
		{"per-person users: kubectl annotate cluster demo cnpg-teleport.io/auto-users=true; bob (role cnpg-auto-write) connects as himself", func() error {
			if err := d.w.UpdateCluster(ctx, ns, name, func(c *cnpgv1.Cluster) { c.Annotations["cnpg-teleport.io/auto-users"] = "true" }); err != nil {
				return err
			}
			roles, err := os.ReadFile(world.RepoRoot() + "/config/teleport/auto-user-roles.yaml")
			if err != nil {
				return err
			}
			if err := d.tp.Create(ctx, string(roles)); err != nil {
				return err
			}
			bob, err := d.tp.UserWithRoles(ctx, "bob", "cnpg-auto-write")
			if err != nil {
				return err
			}
			if err := poll(3*time.Minute, func() error {
				out, err := bob.Query(ctx, "kind-default-demo-rw", "bob", "app",
					"SELECT 'connected as ' || current_user || ', member of ' || (SELECT string_agg(g.rolname, ', ' ORDER BY g.rolname) FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = current_user);")
				if err != nil {
					return err
				}
				show([]byte(out))
				return nil
			}); err != nil {
				return err
			}
			return poll(30*time.Second, func() error {
				out, err := alice.Query(ctx, "kind-default-demo-rw", "teleport_read", "app",
					"SELECT 'after disconnect: ' || rolname || ' can log in: ' || rolcanlogin FROM pg_roles WHERE rolname = 'bob';")
				if err != nil {
					return err
				}
				if !strings.Contains(out, "can log in: false") {
					return fmt.Errorf("bob not deactivated yet: %s", out)
				}
				show([]byte(out))
				return nil
			})
		}},
		{"kubectl delete cluster demo: the finalizer deregisters", func() error {
			if err := d.w.Client.Delete(ctx, &cluster); err != nil {
				return err
			}
			return poll(30*time.Second, func() error {
				names, err := alice.DBNames(ctx)
				if err != nil {
					return err
				}
				if len(names) > 0 {
					return fmt.Errorf("still listed: %v", names)
				}
				out, _ := alice.Tsh(ctx, "", "db", "ls", "-v")
				show(out)
				return nil
			})
		}},
	}
	for _, s := range steps {
		if err := d.step(s.title, s.f); err != nil {
			return err
		}
	}
	return nil
}

func poll(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// httpGet returns the body of a GET on the loopback.
func httpGet(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}
