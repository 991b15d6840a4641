package world

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRaceReports(t *testing.T) {
	dir := t.TempDir()
	report := `==================
WARNING: DATA RACE
Write at 0x00c000123456 by goroutine 7:
  main.main.func1()
      /src/main.go:9 +0x44

Previous read at 0x00c000123456 by goroutine 6:
  main.main()
      /src/main.go:11 +0x88
==================
`
	for name, body := range map[string]string{
		"controller.log": "I1204 starting\n" + report + "I1204 reconciled\n" + report,
		"kubelet.log":    "no race here\n",
		"other.txt":      report, // not a process log
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got, err := RaceReports(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d reports, want 2: %q", len(got), got)
	}
	for _, r := range got {
		if !strings.HasPrefix(r, "controller.log:\nWARNING: DATA RACE\nWrite at") || !strings.Contains(r, "main.go:11") || strings.Contains(r, "reconciled") {
			t.Errorf("report %q", r)
		}
	}
	if got, _ := RaceReports(t.TempDir()); len(got) != 0 {
		t.Errorf("an empty directory: %q", got)
	}
}
