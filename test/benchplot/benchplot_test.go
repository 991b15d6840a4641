package benchplot

import (
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// spread returns n samples evenly spread over [lo, hi].
func spread(lo, hi float64, n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = lo + (hi-lo)*float64(i)/float64(n-1)
	}
	return out
}

// decode reads the PNG at path.
func decode(t *testing.T, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// columns returns the x of every pixel of colour c inside r but outside skip.
func columns(img image.Image, r, skip image.Rectangle, c color.RGBA) []int {
	var xs []int
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			if image.Pt(x, y).In(skip) {
				continue
			}
			if color.RGBAModel.Convert(img.At(x, y)).(color.RGBA) == c {
				xs = append(xs, x)
			}
		}
	}
	return xs
}

// median of xs (sorted in place); -1 when empty.
func median(xs []int) int {
	if len(xs) == 0 {
		return -1
	}
	slices.Sort(xs)
	return xs[len(xs)/2]
}

func TestWritePNG(t *testing.T) {
	latency := Panel{
		Title: "Latency", XLabel: "ms (log)", YLabel: "fraction <= x", LogX: true,
		Series: []Series{
			CDF("fast → 1 ms", spread(0.8, 1.2, 50)),
			CDF("slow → 1 s", spread(800, 1200, 50)),
			CDF("mid → 30 ms", spread(25, 35, 50)),
		},
	}
	conv := Panel{
		Title: "Convergence", XLabel: "seconds", YLabel: "registered",
		Series: []Series{{Name: "registered", X: []float64{0, 10, 30, 60, 120}, Y: []float64{0, 100, 700, 1000, 1000}}},
	}
	path := filepath.Join(t.TempDir(), "plot.png")
	if err := WritePNG(path, "benchplot test", latency, conv); err != nil {
		t.Fatal(err)
	}
	if out := os.Getenv("BENCHPLOT_OUT"); out != "" { // keep a copy to look at
		b, _ := os.ReadFile(path)
		if err := os.WriteFile(out, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	img := decode(t, path)
	_, legends, err := render("benchplot test", []Panel{latency, conv}) // where the legends went
	if err != nil {
		t.Fatal(err)
	}

	if got, want := img.Bounds().Size(), image.Pt(1280, 450); got != want {
		t.Fatalf("size = %v, want %v", got, want)
	}
	if c := color.RGBAModel.Convert(img.At(2, 2)); c != (color.RGBA{255, 255, 255, 255}) {
		t.Errorf("background = %v, want white", c)
	}

	// Panel 1: every series is drawn, at the right place on the log axis
	// (range 0.1..10000, so 1 ms is at 20%, 30 ms at ~50%, 1 s at 80%).
	r1 := plotRect(0)
	skip1 := legends[0]
	at := func(frac float64) int { return r1.Min.X + int(frac*float64(r1.Dx())) }
	for i, want := range []struct{ lo, hi int }{
		{at(0.15), at(0.25)}, // fast
		{at(0.75), at(0.85)}, // slow
		{at(0.45), at(0.55)}, // mid
	} {
		xs := columns(img, r1, skip1, palette[i])
		if len(xs) < 50 {
			t.Errorf("panel 1 series %d: %d pixels of its colour, want a visible line", i, len(xs))
			continue
		}
		if m := median(xs); m < want.lo || m > want.hi {
			t.Errorf("panel 1 series %d: median x %d, want in [%d, %d]", i, m, want.lo, want.hi)
		}
	}
	if n := len(columns(img, r1, image.Rectangle{}, palette[3])); n != 0 {
		t.Errorf("panel 1: %d pixels of unused colour", n)
	}
	// Each series has a legend swatch.
	for i := range latency.Series {
		if len(columns(img, skip1, image.Rectangle{}, palette[i])) == 0 {
			t.Errorf("legend: no swatch for series %d", i)
		}
	}

	// Panel 2: the curve reaches 1000 (top of the plot) by 60 s (middle)
	// and stays there to the right edge; it starts at the bottom left.
	r2 := plotRect(1)
	skip2 := legends[1]
	top := image.Rect(r2.Min.X, r2.Min.Y, r2.Max.X, r2.Min.Y+r2.Dy()/5)
	bottomLeft := image.Rect(r2.Min.X, r2.Max.Y-r2.Dy()/5, r2.Min.X+r2.Dx()/5, r2.Max.Y)
	if xs := columns(img, top, skip2, palette[0]); len(xs) < 100 || slices.Min(xs) > r2.Min.X+r2.Dx()*6/10 || slices.Max(xs) < r2.Max.X-3 {
		t.Errorf("panel 2: plateau pixels span %v..%v (n=%d), want from ~middle to the right edge", slices.Min(append(xs, 1e9)), slices.Max(append(xs, -1)), len(xs))
	}
	if len(columns(img, bottomLeft, skip2, palette[0])) == 0 {
		t.Error("panel 2: curve does not start at the bottom left")
	}
	if len(columns(img, r2, image.Rectangle{}, palette[1])) != 0 {
		t.Error("panel 2: pixels of a colour no series there uses")
	}
}

func TestCDF(t *testing.T) {
	s := CDF("x", []float64{3, 1, 2, 2, math.NaN()})
	if want := []float64{1, 2, 3}; !reflect.DeepEqual(s.X, want) {
		t.Errorf("X = %v, want %v", s.X, want)
	}
	if want := []float64{0.25, 0.75, 1}; !reflect.DeepEqual(s.Y, want) {
		t.Errorf("Y = %v, want %v", s.Y, want)
	}
	if s.Name != "x" {
		t.Errorf("Name = %q", s.Name)
	}
	if e := CDF("e", nil); len(e.X) != 0 || len(e.Y) != 0 {
		t.Errorf("CDF(nil) = %+v, want no points", e)
	}
}

func TestAxes(t *testing.T) {
	a := logAxis(0.8, 1200)
	if want := []string{"0.1", "1", "10", "100", "1000", "10000"}; !reflect.DeepEqual(a.labels, want) {
		t.Errorf("log labels = %v, want %v", a.labels, want)
	}
	if a.lo != 0.1 || a.hi != 10000 {
		t.Errorf("log range = %v..%v, want 0.1..10000", a.lo, a.hi)
	}
	if f := a.frac(1000); math.Abs(f-0.8) > 1e-9 {
		t.Errorf("log frac(1000) = %v, want 0.8", f)
	}
	b := linearAxis(0, 1.05, false)
	if want := []string{"0.0", "0.2", "0.4", "0.6", "0.8", "1.0"}; !reflect.DeepEqual(b.labels, want) {
		t.Errorf("linear labels = %v, want %v", b.labels, want)
	}
	c := linearAxis(3, 187, true)
	if want := []string{"0", "50", "100", "150", "200"}; !reflect.DeepEqual(c.labels, want) {
		t.Errorf("snapped labels = %v, want %v", c.labels, want)
	}
}

func TestDegenerate(t *testing.T) {
	// One-point series, equal min/max and all-zero Y must draw, not divide by zero.
	for name, p := range map[string]Panel{
		"one point":   {Series: []Series{{Name: "p", X: []float64{5}, Y: []float64{7}}}},
		"all zero":    {Series: []Series{{Name: "z", X: []float64{0, 0}, Y: []float64{0, 0}}}},
		"log one":     {LogX: true, Series: []Series{CDF("c", []float64{10, -1})}},
		"empty + one": {Series: []Series{{Name: "e"}, {Name: "p", X: []float64{1}, Y: []float64{1}}}},
	} {
		img, legends, err := render("t", []Panel{p})
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		i := len(p.Series) - 1
		if len(columns(img, plotRect(0), legends[0], palette[i])) == 0 {
			t.Errorf("%s: point not drawn", name)
		}
	}
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	for name, tc := range map[string]struct {
		panels []Panel
		want   string
	}{
		"no panels":      {nil, "no panels"},
		"no points":      {[]Panel{{Title: "a"}, {Title: "b", Series: []Series{{Name: "empty"}}}}, "no points"},
		"no positive x":  {[]Panel{{LogX: true, Series: []Series{{X: []float64{0, -1}, Y: []float64{1, 2}}}}}, "no positive x"},
		"only NaN point": {[]Panel{{Series: []Series{{X: []float64{math.NaN()}, Y: []float64{1}}}}}, "no points"},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".png")
		err := WritePNG(path, "t", tc.panels...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want containing %q", name, err, tc.want)
		}
		if _, serr := os.Stat(path); serr == nil {
			t.Errorf("%s: file written despite error", name)
		}
	}
	ok := Panel{Series: []Series{{X: []float64{1}, Y: []float64{1}}}}
	if err := WritePNG(filepath.Join(dir, "missing", "x.png"), "t", ok); err == nil {
		t.Error("unwritable path: no error")
	}
}
