package world

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Process is one child process of the world. It is started with its own
// process group and a parent-death signal, logs into a file in the world's
// directory, and is stopped by its own PID.
type Process struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
}

// StartProcess starts argv with stdout and stderr appended to dir/name.log,
// with this process's environment plus env.
func StartProcess(dir, name string, env []string, argv ...string) (*Process, error) {
	return startProcess(dir, name, append(os.Environ(), env...), argv)
}

// startProcess is StartProcess with exactly env as the environment.
func startProcess(dir, name string, env, argv []string) (*Process, error) {
	return startProcessIn("", dir, name, env, argv)
}

// startProcessIn is startProcess in the working directory workDir.
func startProcessIn(workDir, dir, name string, env, argv []string) (*Process, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open log of %s: %w", name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = env
	cmd.Dir = workDir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = f.Close()
		close(p.done)
	}()
	return p, nil
}

// PID is the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Stop sends SIGTERM to the process (by PID) and its group, waits up to
// 10 s, then kills. Stopping a stopped process is a no-op.
func (p *Process) Stop() { p.StopWithin(10 * time.Second) }

// StopWithin is Stop with another grace period. The process group is killed
// at the end in any case, so no child outlives the process.
func (p *Process) StopWithin(grace time.Duration) {
	if ok, _ := p.Exited(); !ok {
		_ = syscall.Kill(p.PID(), syscall.SIGTERM)
		_ = syscall.Kill(-p.PID(), syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			_ = syscall.Kill(p.PID(), syscall.SIGKILL)
			<-p.done
		}
	}
	_ = syscall.Kill(-p.PID(), syscall.SIGKILL)
}

// Done is closed when the process has ended.
func (p *Process) Done() <-chan struct{} { return p.done }

// Tail returns the last n bytes of the process log.
func (p *Process) Tail(n int64) string {
	return tailFile(p.LogPath, n)
}

func tailFile(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	if st.Size() > n {
		if _, err := f.Seek(st.Size()-n, io.SeekStart); err != nil {
			return err.Error()
		}
	}
	var b bytes.Buffer
	_, _ = io.Copy(&b, f)
	return b.String()
}

// waitFor polls check every interval until it returns nil or timeout passes.
func waitFor(timeout, interval time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s: %w", timeout, err)
		}
		time.Sleep(interval)
	}
}
