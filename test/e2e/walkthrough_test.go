package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnpg-teleport/cnpg-teleport/test/world"
)

// walkthroughHeading opens the README section TestWalkthrough runs; the
// section ends at the next "## " heading.
const walkthroughHeading = "## From zero to `tsh db connect`"

// walkNS is what TestWalkthrough puts for the README's <namespace>: where
// the Cluster pg lives. It has no "-", so the default db name is
// prod-<namespace>-pg-rw exactly (a "-" would add a hash, see the README).
const walkNS = "payments"

// walkthroughPlaceholders are the only textual changes TestWalkthrough makes
// to the README's commands: values every reader replaces with their own.
// teleport.example.com:443 is one address in production (the proxy, with a
// certificate people trust); the world's proxy has a self-signed web
// certificate, which tsh is told to accept (--insecure, see the tsh wrapper)
// but the controller's API client must not be, so the controller (a Pod of
// the world) is given the world's auth address as Pods reach it, and tsh the
// proxy's.
func walkthroughPlaceholders(authAddr, proxyAddr string) *strings.Replacer {
	return strings.NewReplacer(
		"teleport.address=teleport.example.com:443", "teleport.address="+authAddr,
		"--proxy=teleport.example.com:443", "--proxy="+proxyAddr,
		"<namespace>", walkNS,
	)
}

// unknownPlaceholder finds what is left of a placeholder after
// walkthroughPlaceholders: a README command with a new one cannot run as written.
var unknownPlaceholder = regexp.MustCompile(`teleport\.example\.com|<[a-z][a-z0-9_-]*>`)

// readmeCommand is one shell command of the walk-through, verbatim: its
// continuation lines and here-document included.
type readmeCommand struct {
	Text string
	Line int // where it starts in README.md
}

// walkCheck is what TestWalkthrough does around the README commands that
// start with prefix (as written, placeholders and all): what a person types
// on stdin, what the README promises the command prints, how long the
// README lets that take (the command is re-run until then), and what
// happens next outside the shell.
type walkCheck struct {
	prefix string
	stdin  func() string
	within time.Duration
	want   func(stdout string) error
	after  func(stdout string)
}

// TestWalkthrough runs the README's walk-through ("From zero to `tsh db
// connect`"), read from README.md when the test runs: every command of its
// sh blocks and every inline `kubectl …` or `tsh …`, in order, with bash, as
// written (only walkthroughPlaceholders replaced), against the test world
// and its Teleport, from a directory that looks like a checkout. So an edit
// to a README command changes what this test runs, and the README cannot
// drift from what works. What only a person does in a browser (alice
// choosing her password from the invite link) is done through Teleport's web
// API, and the password is typed into tsh's prompt.
func TestWalkthrough(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(world.RepoRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	cmds, err := walkthroughCommands(string(raw))
	if err != nil {
		t.Fatalf("README.md: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	db := "prod-" + walkNS + "-pg-rw"
	var (
		w        *world.World
		tp       *world.Teleport
		password string
		guards   []func() error // polled while waiting: what would make waiting pointless
	)
	checks := []walkCheck{
		{prefix: "tctl users add alice", after: func(out string) {
			// Alice opens the link and chooses a password.
			p, err := tp.AcceptInvite(ctx, out)
			if err != nil {
				t.Fatal(err)
			}
			password = p
		}},
		{prefix: "helm install ", after: func(string) {
			guards = append(guards, chartDeploymentReady(ctx, t, w, tp))
		}},
		{prefix: "tsh login ", stdin: func() string { return password + "\n" }, want: func(out string) error {
			if !strings.Contains(out, "Logged in as") {
				return fmt.Errorf("not logged in:\n%s", out)
			}
			return nil
		}},
		{prefix: "tsh db ls -v", within: time.Minute, want: func(out string) error {
			if !strings.Contains(out, db) {
				return fmt.Errorf("%s is not listed:\n%s", db, out)
			}
			return nil
		}},
		{prefix: "helm uninstall ", after: func(string) {
			uninstalled(ctx, t, w, tp, db)
		}},
		{prefix: "tsh db connect ", within: time.Minute, stdin: func() string { return "SELECT 'walkthrough ' || current_user AS who;\n" },
			want: func(out string) error {
				if !strings.Contains(out, "walkthrough teleport_read") || !strings.Contains(out, "(1 row)") {
					return fmt.Errorf("no row from the query as teleport_read:\n%s", out)
				}
				return nil
			}},
	}
	// Both mistakes are found before the world starts: a placeholder the
	// test cannot fill, and a check whose command left the README (it would
	// silently check nothing).
	for _, c := range cmds {
		if p := unknownPlaceholder.FindString(walkthroughPlaceholders("auth", "proxy").Replace(c.Text)); p != "" {
			t.Fatalf("README.md:%d: %q is a placeholder TestWalkthrough does not replace (walkthroughPlaceholders):\n%s", c.Line, p, c.Text)
		}
	}
	for _, c := range checks {
		if checkFor(checks, cmds, c.prefix) == 0 {
			t.Fatalf("README.md's walk-through has no command starting with %q, which TestWalkthrough checks: "+
				"update the check with the README", c.prefix)
		}
	}

	w = world.Start(t, world.Options{})
	tp = startTeleport(t)
	sh := newWalkShell(t, w, tp)
	subst := walkthroughPlaceholders(tp.PodAuthAddr, tp.ProxyAddr)
	t0 := time.Now()
	for _, c := range cmds {
		run := subst.Replace(c.Text)
		chk := printsCheck(c.Text)
		if i := checkIndex(checks, c.Text); i >= 0 {
			chk = checks[i]
		}
		out := sh.runChecked(ctx, c, run, chk, guards)
		if chk.after != nil {
			chk.after(out)
		}
	}
	t.Logf("the README's walk-through: %d commands in %s", len(cmds), time.Since(t0).Round(time.Second))
}

// printsComment is the README's way of saying what a command prints: a
// trailing "# prints VALUE" (or "# prints nothing"), the rest of the comment
// being words for the reader.
var printsComment = regexp.MustCompile(`#\s*prints\s+(\S+)`)

// printsCheck is the check of a command whose README comment says what it
// prints: exactly that (trimmed), within 3 minutes (it reports on what the
// controller and CNPG are doing).
func printsCheck(text string) walkCheck {
	m := printsComment.FindStringSubmatch(text)
	if m == nil {
		return walkCheck{}
	}
	want := m[1]
	if want == "nothing" {
		want = ""
	}
	return walkCheck{within: 3 * time.Minute, want: func(out string) error {
		if out != want {
			return fmt.Errorf("printed %q, the README promises %q", out, want)
		}
		return nil
	}}
}

// uninstalled checks what the README promises after `helm uninstall`: the
// controller is gone, Teleport has no db resource of the Cluster left, and
// the Cluster starts again without it (its Pod deleted, CNPG brings it back
// healthy).
func uninstalled(ctx context.Context, t *testing.T, w *world.World, tp *world.Teleport, db string) {
	t.Helper()
	world.Eventually(t, time.Minute, "the controller's Pods gone", func() error {
		var pods corev1.PodList
		if err := w.Client.List(ctx, &pods, client.InNamespace(chartNS)); err != nil {
			return err
		}
		if len(pods.Items) > 0 {
			return fmt.Errorf("%d Pods left in %s", len(pods.Items), chartNS)
		}
		return nil
	})
	out, err := tp.Tctl(ctx, "", "get", "db", "--format=json")
	if err != nil {
		t.Fatalf("tctl get db: %v\n%s", err, out)
	}
	if prefix := strings.TrimSuffix(db, "-rw"); strings.Contains(string(out), `"`+prefix) {
		t.Fatalf("Teleport still has a db resource of %s after the opt-out and uninstall:\n%s", prefix, out)
	}
	t0 := time.Now()
	c, err := w.RestartClusterPod(ctx, walkNS, "pg", "pg-1", 3*time.Minute)
	if err != nil {
		t.Fatalf("pg after uninstall: %v", err)
	}
	if ca := c.Status.Certificates.ClientCASecret; ca != "pg-ca" {
		t.Fatalf("pg runs client CA %q after uninstall, want its own pg-ca", ca)
	}
	t.Logf("uninstalled: no db of pg in Teleport; pg's Pod deleted and pg healthy again in %s", time.Since(t0).Round(100*time.Millisecond))
}

// checkIndex is the index of the first check for the README command text, or -1.
func checkIndex(checks []walkCheck, text string) int {
	for i, c := range checks {
		if strings.HasPrefix(text, c.prefix) {
			return i
		}
	}
	return -1
}

// checkFor counts the README commands whose check is the one for prefix.
func checkFor(checks []walkCheck, cmds []readmeCommand, prefix string) int {
	n := 0
	for _, c := range cmds {
		if i := checkIndex(checks, c.Text); i >= 0 && checks[i].prefix == prefix {
			n++
		}
	}
	return n
}

// walkthroughCommands returns the commands of the README's walk-through
// section, in order: every command of each ```sh block, and every inline
// code span starting with "kubectl " or "tsh " outside them (a command in
// prose is a command too).
func walkthroughCommands(readme string) ([]readmeCommand, error) {
	lines := strings.Split(readme, "\n")
	start := -1
	for i, l := range lines {
		if strings.TrimSpace(l) == walkthroughHeading {
			start = i + 1
			break
		}
	}
	if start < 0 {
		return nil, fmt.Errorf("no section %q", walkthroughHeading)
	}
	var cmds []readmeCommand
	for i := start; i < len(lines) && !strings.HasPrefix(lines[i], "## "); i++ {
		fence := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(fence, "```") {
			cmds = append(cmds, inlineCommands(lines[i], i+1)...)
			continue
		}
		indent := len(lines[i]) - len(strings.TrimLeft(lines[i], " "))
		body, end, err := fencedBlock(lines, i+1, indent)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		if fence == "```sh" {
			block, err := shellCommands(body, i+2)
			if err != nil {
				return nil, err
			}
			cmds = append(cmds, block...)
		}
		i = end
	}
	if len(cmds) == 0 {
		return nil, fmt.Errorf("no commands in %q", walkthroughHeading)
	}
	return cmds, nil
}

// fencedBlock returns the lines of the code block opened before line from
// (0-based), without the fence's indentation, and the index of its closing fence.
func fencedBlock(lines []string, from, indent int) ([]string, int, error) {
	var body []string
	for j := from; j < len(lines); j++ {
		if strings.TrimSpace(lines[j]) == "```" {
			return body, j, nil
		}
		l := lines[j]
		for k := 0; k < indent && strings.HasPrefix(l, " "); k++ {
			l = l[1:]
		}
		body = append(body, l)
	}
	return nil, 0, errors.New("code block not closed")
}

var inlineCode = regexp.MustCompile("`([^`]+)`")

// inlineCommands are the inline code spans of one line that are commands.
func inlineCommands(line string, n int) []readmeCommand {
	var cmds []readmeCommand
	for _, m := range inlineCode.FindAllStringSubmatch(line, -1) {
		if strings.HasPrefix(m[1], "kubectl ") || strings.HasPrefix(m[1], "tsh ") {
			cmds = append(cmds, readmeCommand{Text: m[1], Line: n})
		}
	}
	return cmds
}

var hereDoc = regexp.MustCompile(`<<-?\s*['"]?([A-Za-z_][A-Za-z0-9_]*)['"]?`)

// shellCommands splits a sh block (first line numbered first) into
// commands: a line, with the lines a trailing backslash continues and the
// body of a here-document it opens. Blank and comment lines are skipped.
func shellCommands(body []string, first int) ([]readmeCommand, error) {
	var cmds []readmeCommand
	for i := 0; i < len(body); i++ {
		if t := strings.TrimSpace(body[i]); t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		c := readmeCommand{Text: body[i], Line: first + i}
		for strings.HasSuffix(strings.TrimRight(body[i], " "), `\`) && i+1 < len(body) {
			i++
			c.Text += "\n" + body[i]
		}
		if m := hereDoc.FindStringSubmatch(c.Text); m != nil {
			closed := false
			for !closed && i+1 < len(body) {
				i++
				c.Text += "\n" + body[i]
				closed = strings.TrimSpace(body[i]) == m[1]
			}
			if !closed {
				return nil, fmt.Errorf("line %d: here-document %s not closed", c.Line, m[1])
			}
		}
		cmds = append(cmds, c)
	}
	return cmds, nil
}

// walkShell runs README commands with bash in a directory that looks like a
// checkout of the repository (config/ and charts/ link to it; what the
// commands write, such as the identity file, stays there), with a HOME of its
// own and PATH starting with wrapper scripts (see writeWrappers), so the
// commands run as written against the world.
type walkShell struct {
	t   *testing.T
	dir string
	env []string
}

func newWalkShell(t *testing.T, w *world.World, tp *world.Teleport) *walkShell {
	t.Helper()
	root := t.TempDir()
	s := &walkShell{t: t, dir: filepath.Join(root, "checkout")}
	home, bin := filepath.Join(root, "home"), filepath.Join(root, "bin")
	for _, d := range []string{s.dir, home, bin} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"config", "charts"} {
		if err := os.Symlink(filepath.Join(world.RepoRoot(), d), filepath.Join(s.dir, d)); err != nil {
			t.Fatal(err)
		}
	}
	if err := writeWrappers(bin, home, w, tp); err != nil {
		t.Fatal(err)
	}
	for _, e := range os.Environ() {
		k, _, _ := strings.Cut(e, "=")
		switch {
		case k == "PATH", k == "HOME", k == "KUBECONFIG", strings.HasPrefix(k, "XDG_"),
			strings.HasPrefix(k, "HELM_"), strings.HasPrefix(k, "TELEPORT_"):
			continue
		}
		s.env = append(s.env, e)
	}
	s.env = append(s.env, "PATH="+bin+":"+os.Getenv("PATH"), "HOME="+home)
	return s
}

// writeWrappers writes the commands the README calls, each a small script
// in front of the world's binary, saying what it adds and why.
func writeWrappers(bin, home string, w *world.World, tp *world.Teleport) error {
	kubectl, err := world.ToolDir("kubectl")
	if err != nil {
		return err
	}
	helm, err := world.ToolDir("helm")
	if err != nil {
		return err
	}
	scripts := map[string]string{
		"kubectl": fmt.Sprintf(`# kubectl: the real kubectl v1.37.2 (hack/tools.sh kubectl) on the world's
# apiserver, as its admin: the README's reader is a cluster admin.
export KUBECONFIG=%q
exec %q "$@"
`, w.Kubeconfig, filepath.Join(kubectl, "kubectl")),
		"helm": fmt.Sprintf(`# helm: the real Helm (hack/tools.sh helm) on the world's apiserver, as its
# admin, with its cache, config and data under the test's HOME.
export KUBECONFIG=%q HELM_CACHE_HOME=%q HELM_CONFIG_HOME=%q HELM_DATA_HOME=%q
exec %q "$@"
`, w.Kubeconfig, filepath.Join(home, "helm", "cache"), filepath.Join(home, "helm", "config"),
			filepath.Join(home, "helm", "data"), filepath.Join(helm, "helm")),
		"tctl": fmt.Sprintf(`# tctl: the world's Teleport admin tool, with the auth server's config (-c),
# as an admin runs it on the auth server's host.
exec %q -c %q "$@"
`, filepath.Join(tp.BinDir, "tctl"), tp.Config),
		"tsh": fmt.Sprintf(`# tsh: the world's tsh, with its profile under the test's HOME and
# --insecure: the world's proxy has a self-signed web certificate (the
# database connection stays verify-full). tsh reads a password only from a
# terminal: tsh login runs under script(1), which gives it one and types
# stdin into it, as a person types at the prompt.
export TELEPORT_HOME=%q
tsh=%q
if [ "${1:-}" = login ]; then
	exec script -qec "$(printf '%%q ' "$tsh" --insecure "$@")" /dev/null
fi
exec "$tsh" --insecure "$@"
`, filepath.Join(home, ".tsh"), filepath.Join(tp.BinDir, "tsh")),
	}
	for name, body := range scripts {
		//nolint:gosec // an executable script the test writes for itself
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/bash\n"+body), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// runChecked runs one README command (run: it with the placeholders
// replaced) and checks it: a failure, or an outcome the README does not
// promise, fails the test, naming the README line. With chk.within the
// command is re-run until it passes or that time is up, and guards are
// polled meanwhile. It returns the command's stdout.
func (s *walkShell) runChecked(ctx context.Context, c readmeCommand, run string, chk walkCheck, guards []func() error) string {
	t := s.t
	t.Helper()
	stdin := ""
	if chk.stdin != nil {
		stdin = chk.stdin()
	}
	// What was typed is not printed back (script(1) echoes alice's password
	// before tsh turns echo off).
	typed := strings.TrimSpace(stdin)
	hide := func(s string) string {
		if typed == "" {
			return s
		}
		return strings.ReplaceAll(s, typed, "<typed>")
	}
	check := func() (string, error) {
		stdout, stderr, err := s.run(ctx, run, stdin)
		stdout, stderr = hide(stdout), hide(stderr)
		if err != nil {
			return stdout, fmt.Errorf("%w\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
		}
		if chk.want != nil {
			if err := chk.want(strings.TrimSpace(stdout)); err != nil {
				return stdout, fmt.Errorf("%w\nstderr:\n%s", err, stderr)
			}
		}
		return stdout, nil
	}
	t0 := time.Now()
	out, err := check()
	for err != nil && time.Since(t0) < chk.within {
		for _, g := range guards {
			if gerr := g(); gerr != nil {
				t.Fatalf("README.md:%d: waiting for `%s`: %v", c.Line, firstLine(c.Text), gerr)
			}
		}
		time.Sleep(time.Second) // the interval between tries of a command that has not succeeded yet
		out, err = check()
	}
	ran := ""
	if run != c.Text {
		ran = "\n(run as: " + run + ")"
	}
	if err != nil {
		t.Fatalf("README.md:%d: %s%s\nfailed (after %s): %v", c.Line, c.Text, ran, time.Since(t0).Round(time.Second), err)
	}
	t.Logf("README.md:%d $ %s  [%s]\n%s", c.Line, c.Text, time.Since(t0).Round(100*time.Millisecond), indent(out))
	return strings.TrimSpace(out)
}

// run runs one command with bash (pipefail) in the checkout, bounded; on
// the bound its whole process group is killed (tsh, psql, script).
func (s *walkShell) run(ctx context.Context, command, stdin string) (string, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-o", "pipefail", "-c", command)
	cmd.Dir, cmd.Env = s.dir, s.env
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

func indent(s string) string {
	var b strings.Builder
	sc := bufio.NewScanner(strings.NewReader(strings.TrimRight(s, "\n")))
	for sc.Scan() {
		b.WriteString("    | " + sc.Text() + "\n")
	}
	return b.String()
}

// chartDeploymentReady waits until the Pods of the one Deployment `helm
// install` made in the chart's namespace are Ready (the world's kubelet runs
// the controller image as the chart says), and returns a guard that fails
// the test when a controller container ends or restarts.
func chartDeploymentReady(ctx context.Context, t *testing.T, w *world.World, tp *world.Teleport) func() error {
	t.Helper()
	var ds appsv1.DeploymentList
	if err := w.Client.List(ctx, &ds, client.InNamespace(chartNS)); err != nil {
		t.Fatal(err)
	}
	if len(ds.Items) != 1 {
		t.Fatalf("helm install made %d Deployments in %s, want 1", len(ds.Items), chartNS)
	}
	d := &ds.Items[0]
	b := &chartBed{t: t, ctx: ctx, w: w, tp: tp}
	t.Logf("the chart's controller Pods Ready: %s", strings.Join(b.readyPods(d), " "))
	return func() error {
		b.podsRunning(d)
		return nil
	}
}

// TestWalkthroughCommands pins how the README's sh blocks are split into
// commands: continuation lines and here-documents stay with their command,
// comments and blank lines are not commands, inline kubectl and tsh spans are.
func TestWalkthroughCommands(t *testing.T) {
	readme := "# x\n\n" + walkthroughHeading + "\n\nRun `tsh db ls` and `helm upgrade`.\n" +
		"1. Step:\n   ```sh\n   # a comment\n   a \\\n     --b\n\n   tctl create <<'EOF'\n   kind: user\n   EOF\n   c   # trailing\n   ```\n" +
		"   ```yaml\n   not: a command\n   ```\n## Next\n`kubectl get pods`\n"
	got, err := walkthroughCommands(readme)
	if err != nil {
		t.Fatal(err)
	}
	want := []readmeCommand{
		{Text: "tsh db ls", Line: 5},
		{Text: "a \\\n  --b", Line: 9},
		{Text: "tctl create <<'EOF'\nkind: user\nEOF", Line: 12},
		{Text: "c   # trailing", Line: 15},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if _, err := walkthroughCommands(strings.Replace(readme, "   EOF\n", "", 1)); err == nil {
		t.Error("an unclosed here-document was accepted")
	}
	if _, err := walkthroughCommands("# no walk-through\n"); err == nil {
		t.Error("a README without the section was accepted")
	}
}
