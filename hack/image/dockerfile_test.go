package main

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The Dockerfile cannot be built here (no engine, no base-image registry),
// so TestDockerfileBuildStage builds what its build stage builds from
// exactly what it would see: the files .dockerignore lets into the context,
// copied as its COPY lines say, then its RUN lines' `go build` there. A
// package the binary needs but no COPY brings in, or that .dockerignore
// keeps out, fails the build, as it would fail `docker build`.

// dockerfileStage is the build stage: its COPY sources and its RUN lines.
type dockerfileStage struct {
	copies [][2]string // src, dst (relative to WORKDIR)
	runs   []string
	args   map[string]string
}

// parseBuildStage reads the Dockerfile's first stage (until the next FROM),
// joining continued lines.
func parseBuildStage(path string) (dockerfileStage, error) {
	raw, err := os.ReadFile(path) //nolint:gosec // the repository's Dockerfile
	if err != nil {
		return dockerfileStage{}, err
	}
	st := dockerfileStage{args: map[string]string{}}
	var lines []string
	cur := ""
	for l := range strings.SplitSeq(string(raw), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasSuffix(l, "\\") {
			cur += strings.TrimSuffix(l, "\\") + " "
			continue
		}
		lines = append(lines, cur+l)
		cur = ""
	}
	froms := 0
	for _, l := range lines {
		op, rest, _ := strings.Cut(l, " ")
		switch strings.ToUpper(op) {
		case "FROM":
			froms++
		case "COPY":
			if froms != 1 {
				continue
			}
			f := strings.Fields(rest)
			if len(f) < 2 || strings.HasPrefix(f[0], "--") {
				return st, fmt.Errorf("unsupported COPY in the build stage: %s", l)
			}
			dst := f[len(f)-1]
			for _, src := range f[:len(f)-1] {
				st.copies = append(st.copies, [2]string{src, dst})
			}
		case "RUN":
			if froms == 1 {
				st.runs = append(st.runs, rest)
			}
		case "ARG":
			if froms == 1 {
				k, v, _ := strings.Cut(rest, "=")
				st.args[k] = v
			}
		}
	}
	if froms < 2 {
		return st, fmt.Errorf("want a build stage and a runtime stage, found %d FROM", froms)
	}
	return st, nil
}

// dockerignoreAllows returns the context filter of a .dockerignore of the
// form this repository uses: `*`, then `!path` lines letting paths back in.
func dockerignoreAllows(path string) (func(rel string) bool, error) {
	f, err := os.Open(path) //nolint:gosec // the repository's .dockerignore
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	var allowed []string
	first := true
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		switch {
		case first && l == "*":
		case !first && strings.HasPrefix(l, "!"):
			allowed = append(allowed, strings.TrimSuffix(strings.TrimPrefix(l, "!"), "/"))
		default:
			return nil, fmt.Errorf(".dockerignore: rule %q is not of the `*` then `!path` form this test reads", l)
		}
		first = false
	}
	return func(rel string) bool {
		return slices.ContainsFunc(allowed, func(a string) bool { return rel == a || strings.HasPrefix(rel, a+"/") })
	}, sc.Err()
}

func TestDockerfileBuildStage(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	st, err := parseBuildStage(filepath.Join(repo, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	allows, err := dockerignoreAllows(filepath.Join(repo, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	ctxDir := t.TempDir()
	for _, c := range st.copies {
		src := filepath.Join(repo, filepath.FromSlash(strings.TrimSuffix(c[0], "/")))
		dst := filepath.Join(ctxDir, filepath.FromSlash(c[1]))
		if err := copyContext(repo, src, dst, strings.HasSuffix(c[1], "/"), allows); err != nil {
			t.Fatalf("COPY %s %s: %v", c[0], c[1], err)
		}
	}
	out := filepath.Join(t.TempDir(), "out")
	for _, run := range st.runs {
		// As in docker build, `go mod download` fetches the whole module
		// graph (through the module proxy, or from the cache make test
		// filled) and verifies it against go.sum. -trimpath would recompile
		// every dependency (minutes, cold) for no file the build needs: it
		// is the only thing taken out of the RUN lines. The GOFLAGS make
		// sets (no DWARF) stay, for the same reason.
		cmd := strings.ReplaceAll(run, "/out/", out+"/")
		cmd = strings.ReplaceAll(cmd, " -trimpath", "")
		c := exec.Command("sh", "-c", cmd)
		c.Dir = ctxDir
		c.Env = append(os.Environ(), "GOFLAGS="+strings.TrimSpace(os.Getenv("GOFLAGS")+" -mod=readonly"), "GOWORK=off")
		for k, v := range st.args {
			c.Env = append(c.Env, k+"="+v)
		}
		if b, err := c.CombinedOutput(); err != nil {
			t.Fatalf("RUN %s: %v\n%s", run, err, b)
		}
		t.Logf("RUN %s: ok", cmd)
	}
	bin := filepath.Join(out, "cnpg-teleport")
	b, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --version: %v\n%s", bin, err, b)
	}
	if want := st.args["VERSION"]; !strings.Contains(string(b), want) {
		t.Errorf("--version printed %q, want the ARG VERSION default %q", b, want)
	}
}

// copyContext copies src (a file, or a directory's content) to dst as
// Docker's COPY does, taking only what .dockerignore lets into the context.
func copyContext(repo, src, dst string, dstIsDir bool, allows func(string) bool) error {
	info, err := os.Stat(src)
	if err != nil {
		return err
	}
	if !info.IsDir() {
		rel, _ := filepath.Rel(repo, src)
		if !allows(filepath.ToSlash(rel)) {
			return fmt.Errorf("%s is not in the build context (.dockerignore)", rel)
		}
		if dstIsDir {
			dst = filepath.Join(dst, filepath.Base(src))
		}
		return copyOne(src, dst)
	}
	n := 0
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(repo, p)
		if !allows(filepath.ToSlash(rel)) {
			return nil
		}
		sub, _ := filepath.Rel(src, p)
		n++
		return copyOne(p, filepath.Join(dst, sub))
	})
	if err == nil && n == 0 {
		err = fmt.Errorf("nothing of %s is in the build context (.dockerignore)", src)
	}
	return err
}

func copyOne(src, dst string) error {
	raw, err := os.ReadFile(src) //nolint:gosec // a file of the repository
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
		return err
	}
	return os.WriteFile(dst, raw, 0o600) //nolint:gosec // dst is under the test's temp context
}
