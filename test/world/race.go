package world

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// raceMarker begins every report of Go's race detector.
const raceMarker = "WARNING: DATA RACE"

// RaceReports returns the data races Go's race detector reported in the
// process logs (*.log) directly in dir: for each, its log and its first
// lines. make test runs the end-to-end tests with the controller built with
// -race, and every process of it, host process or Pod, logs into the
// world's directory.
func RaceReports(dir string) ([]string, error) {
	logs, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, path := range logs {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		var cur []string
		for sc.Scan() {
			l := sc.Text()
			switch {
			case strings.Contains(l, raceMarker):
				cur = []string{l}
			case cur != nil && (len(cur) >= 24 || strings.HasPrefix(l, "==================")):
				out = append(out, fmt.Sprintf("%s:\n%s", filepath.Base(path), strings.Join(cur, "\n")))
				cur = nil
			case cur != nil:
				cur = append(cur, l)
			}
		}
		if cur != nil {
			out = append(out, fmt.Sprintf("%s:\n%s", filepath.Base(path), strings.Join(cur, "\n")))
		}
		err = sc.Err()
		_ = f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	return out, nil
}

// CheckRaces fails t for every data race reported in the logs in dir.
func CheckRaces(t testing.TB, dir string) {
	t.Helper()
	races, err := RaceReports(dir)
	if err != nil {
		t.Errorf("reading the logs for race reports: %v", err)
	}
	for _, r := range races {
		t.Errorf("data race reported by a process of the world (its log %s)", r)
	}
}
