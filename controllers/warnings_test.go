package controllers

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
)

// TestFitNote: a note the Events API would refuse is cut to its 1 KiB on a
// character boundary, saying so; a short one is left alone.
func TestFitNote(t *testing.T) {
	if got := fitNote("short"); got != "short" {
		t.Fatalf("short: %q", got)
	}
	for _, long := range []string{strings.Repeat("x", 5000), strings.Repeat("é☃", 2000)} {
		got := fitNote(long)
		if len(got) > noteLimit || !utf8.ValidString(got) || !strings.Contains(got, "cut to the Events API's 1 KiB") {
			t.Fatalf("%d bytes, valid UTF-8 %v: %q", len(got), utf8.ValidString(got), got[len(got)-80:])
		}
	}
	e := &dbspec.InvalidAnnotationError{Annotation: dbspec.AnnotationLabels, Value: strings.Repeat("k=v,", 50_000), Reason: "bad"}
	if len(e.Error()) > 200 || !strings.Contains(e.Error(), "(200000 bytes)") {
		t.Fatalf("a 200 KB value quoted whole: %d bytes", len(e.Error()))
	}
}
