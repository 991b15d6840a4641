package teleport

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gravitational/trace"
)

func TestConfigValidation(t *testing.T) {
	addrs := []string{"teleport.example.com:443"}
	tests := []struct {
		name     string
		cfg      Config
		wantPath string // "" = invalid
	}{
		{"identity file", Config{Addrs: addrs, IdentityFile: "/id/identity"}, "/id/identity"},
		{"tbot directory", Config{Addrs: addrs, BotDir: "/var/run/tbot"}, "/var/run/tbot/identity"},
		{"tbot directory with a trailing slash", Config{Addrs: addrs, BotDir: "/var/run/tbot/"}, "/var/run/tbot/identity"},
		{"several addresses", Config{Addrs: []string{"a:3025", "b:3025"}, IdentityFile: "id"}, "id"},
		{"durations set", Config{Addrs: addrs, IdentityFile: "id", ReloadInterval: time.Second, DialTimeout: time.Second}, "id"},
		{"both identities", Config{Addrs: addrs, IdentityFile: "/id/identity", BotDir: "/var/run/tbot"}, ""},
		{"no identity", Config{Addrs: addrs}, ""},
		{"no address", Config{IdentityFile: "id"}, ""},
		{"empty address", Config{Addrs: []string{""}, IdentityFile: "id"}, ""},
		{"negative reload interval", Config{Addrs: addrs, IdentityFile: "id", ReloadInterval: -time.Second}, ""},
		{"negative dial timeout", Config{Addrs: addrs, IdentityFile: "id", DialTimeout: -time.Second}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, err := tt.cfg.identityPath()
			verr := tt.cfg.Validate()
			if tt.wantPath == "" {
				if !trace.IsBadParameter(err) || !trace.IsBadParameter(verr) {
					t.Fatalf("identityPath = %q, %v; Validate = %v; want BadParameter", path, err, verr)
				}
				return
			}
			if err != nil || verr != nil || path != tt.wantPath {
				t.Fatalf("identityPath = %q, %v; Validate = %v; want %q", path, err, verr, tt.wantPath)
			}
		})
	}
}

// TestNewFailsBeforeDialing checks that New reports a bad configuration or a
// missing identity with its kind, without waiting for a dial timeout.
func TestNewFailsBeforeDialing(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("not an identity"), 0o600); err != nil {
		t.Fatal(err)
	}
	// 192.0.2.0/24 is TEST-NET-1: nothing answers, so reaching the dial would time out.
	addrs := []string{"192.0.2.1:3025"}
	tests := []struct {
		name string
		cfg  Config
		kind func(error) bool
	}{
		{"invalid config", Config{Addrs: addrs}, trace.IsBadParameter},
		{"missing identity file", Config{Addrs: addrs, IdentityFile: filepath.Join(dir, "missing")}, trace.IsNotFound},
		{"tbot directory without identity", Config{Addrs: addrs, BotDir: dir}, trace.IsNotFound},
		{"unparsable identity", Config{Addrs: addrs, IdentityFile: garbage}, func(err error) bool { return err != nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			c, err := New(ctx, tt.cfg)
			if c != nil {
				_ = c.Close()
				t.Fatal("New returned a client")
			}
			if !tt.kind(err) {
				t.Fatalf("error %v has the wrong kind", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("took %v: New dialed before checking", d)
			}
		})
	}
}

// TestErrorKindsSurviveWrapping pins what the package relies on: callers
// classify errors with trace.Is*, through trace.Wrap with a message (as this
// package wraps) and through fmt.Errorf %w (as callers may wrap).
func TestErrorKindsSurviveWrapping(t *testing.T) {
	kinds := []struct {
		name string
		err  error
		is   func(error) bool
	}{
		{"NotFound", trace.NotFound("database %q doesn't exist", "a"), trace.IsNotFound},
		{"AlreadyExists", trace.AlreadyExists("database %q already exists", "a"), trace.IsAlreadyExists},
		{"BadParameter", trace.BadParameter(`"db_client" authority type is not supported`), trace.IsBadParameter},
		{"AccessDenied", trace.AccessDenied("access to db denied"), trace.IsAccessDenied},
		{"ConnectionProblem", trace.ConnectionProblem(errors.New("EOF"), "down"), trace.IsConnectionProblem},
	}
	wrappers := []struct {
		name string
		wrap func(error) error
	}{
		{"trace.Wrap", func(err error) error { return trace.Wrap(err) }},
		{"trace.Wrap with message", func(err error) error { return trace.Wrap(err, "teleport: get db %q", "a") }},
		{"fmt.Errorf %w", func(err error) error { return fmt.Errorf("reconciling: %w", err) }},
		{"both, twice", func(err error) error {
			return fmt.Errorf("outer: %w", trace.Wrap(fmt.Errorf("inner: %w", trace.Wrap(err, "teleport")), "again"))
		}},
	}
	for _, k := range kinds {
		for _, w := range wrappers {
			wrapped := w.wrap(k.err)
			if !k.is(wrapped) {
				t.Errorf("%s through %s: kind lost (%v)", k.name, w.name, wrapped)
			}
			for _, other := range kinds {
				if other.name != k.name && other.is(wrapped) {
					t.Errorf("%s through %s also reads as %s", k.name, w.name, other.name)
				}
			}
		}
	}
	// The negative: a plain error with the right words is no kind at all.
	if trace.IsNotFound(errors.New("database \"a\" doesn't exist")) {
		t.Error("a text-only error reads as NotFound")
	}
}
