// Package benchplot draws simple line charts into a PNG file. It is meant
// for benchmark reports (latency CDFs, convergence curves) and depends only
// on the standard library image packages plus golang.org/x/image for the
// bitmap font used for labels.
package benchplot

import (
	"cmp"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Series is one line: points (X[i], Y[i]), X ascending.
type Series struct {
	Name string
	X, Y []float64
}

// Panel is one chart with axes, ticks, a title, axis labels and a legend.
type Panel struct {
	Title, XLabel, YLabel string
	LogX                  bool // logarithmic x axis (every X must be > 0; non-positive points are dropped)
	Series                []Series
}

// Layout of the image: panels side by side under a title line; inside each
// panel the plot area is inset by the margins below.
const (
	panelW, panelH = 640, 420
	titleH         = 30
	marginL        = 70 // y label + tick labels
	marginR        = 15
	marginT        = 28 // panel title
	marginB        = 45 // tick labels + x label
)

var (
	face  = basicfont.Face7x13
	black = color.RGBA{0, 0, 0, 255}
	grid  = color.RGBA{225, 225, 225, 255}
	// palette holds the series colours, chosen to be distinct on white.
	palette = []color.RGBA{
		{31, 119, 180, 255}, {214, 39, 40, 255}, {44, 160, 44, 255}, {255, 127, 14, 255}, // blue red green orange
		{148, 103, 189, 255}, {140, 86, 75, 255}, {227, 119, 194, 255}, {23, 190, 207, 255}, // purple brown pink cyan
	}
)

// CDF returns the empirical cumulative distribution of samples as a Series:
// X = sorted samples, Y = fraction (0..1] of samples <= X.
// Equal samples collapse into one point; NaN samples are ignored.
func CDF(name string, samples []float64) Series {
	xs := slices.DeleteFunc(slices.Clone(samples), math.IsNaN)
	slices.Sort(xs)
	s := Series{Name: name}
	for i, v := range xs {
		if i+1 < len(xs) && xs[i+1] == v {
			continue // keep only the last of equal samples
		}
		s.X = append(s.X, v)
		s.Y = append(s.Y, float64(i+1)/float64(len(xs)))
	}
	return s
}

// WritePNG draws the panels side by side (each about 640x420 px) under a
// title line, and writes the PNG to path. Errors: no panels, a panel with no
// points at all, a LogX panel with no positive X.
func WritePNG(path, title string, panels ...Panel) error {
	img, _, err := render(title, panels)
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	return errors.Join(png.Encode(f, img), f.Close())
}

// render draws the whole image; it also returns each panel's legend box.
func render(title string, panels []Panel) (*image.RGBA, []image.Rectangle, error) {
	if len(panels) == 0 {
		return nil, nil, errors.New("benchplot: no panels")
	}
	img := image.NewRGBA(image.Rect(0, 0, panelW*len(panels), titleH+panelH))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	drawText(img, title, (img.Bounds().Dx()-textWidth(title))/2, 9, black)
	legends := make([]image.Rectangle, len(panels))
	for i, p := range panels {
		var err error
		if legends[i], err = drawPanel(img, plotRect(i), p); err != nil {
			return nil, nil, fmt.Errorf("benchplot: panel %d %q: %w", i, p.Title, err)
		}
	}
	return img, legends, nil
}

// plotRect is the data area of panel i; series pixels stay inside it.
func plotRect(i int) image.Rectangle {
	return image.Rect(i*panelW+marginL, titleH+marginT, (i+1)*panelW-marginR, titleH+panelH-marginB)
}

// drawPanel draws one chart whose data area is r and returns its legend box.
func drawPanel(img *image.RGBA, r image.Rectangle, p Panel) (image.Rectangle, error) {
	// Keep finite points (and only positive X on a log axis).
	series := make([]Series, len(p.Series))
	minX, maxX, minY, maxY := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	finite, kept := 0, 0
	for i, s := range p.Series {
		series[i].Name = s.Name
		for j := 0; j < len(s.X) && j < len(s.Y); j++ {
			x, y := s.X[j], s.Y[j]
			if !isFinite(x) || !isFinite(y) {
				continue
			}
			if finite++; p.LogX && x <= 0 {
				continue
			}
			kept++
			series[i].X, series[i].Y = append(series[i].X, x), append(series[i].Y, y)
			minX, maxX = math.Min(minX, x), math.Max(maxX, x)
			minY, maxY = math.Min(minY, y), math.Max(maxY, y)
		}
	}
	if finite == 0 {
		return image.Rectangle{}, errors.New("no points")
	}
	if kept == 0 {
		return image.Rectangle{}, errors.New("log x axis but no positive x values")
	}

	var xa axis
	if p.LogX {
		xa = logAxis(minX, maxX)
	} else {
		if maxX == minX { // open a window around a single x value
			d := math.Max(math.Abs(minX)/2, 0.5)
			minX, maxX = minX-d, maxX+d
		}
		xa = linearAxis(minX, maxX, true)
	}
	ylo, yhi := math.Min(0, minY), maxY
	if yhi <= ylo {
		yhi = ylo + 1
	}
	ya := linearAxis(ylo, yhi+(yhi-ylo)*0.05, false)

	px := func(x float64) int { return r.Min.X + int(math.Round(xa.frac(x)*float64(r.Dx()-1))) }
	py := func(y float64) int { return r.Max.Y - 1 - int(math.Round(ya.frac(y)*float64(r.Dy()-1))) }

	// Grid, ticks and tick labels.
	for i, v := range xa.ticks {
		x := px(v)
		fill(img, image.Rect(x, r.Min.Y, x+1, r.Max.Y), grid)
		fill(img, image.Rect(x, r.Max.Y, x+1, r.Max.Y+5), black)
		drawText(img, xa.labels[i], x-textWidth(xa.labels[i])/2, r.Max.Y+7, black)
	}
	for _, v := range xa.minor {
		x := px(v)
		fill(img, image.Rect(x, r.Max.Y, x+1, r.Max.Y+3), black)
	}
	for i, v := range ya.ticks {
		y := py(v)
		fill(img, image.Rect(r.Min.X, y, r.Max.X, y+1), grid)
		fill(img, image.Rect(r.Min.X-5, y, r.Min.X, y+1), black)
		drawText(img, ya.labels[i], r.Min.X-8-textWidth(ya.labels[i]), y-6, black)
	}
	fill(img, image.Rect(r.Min.X-1, r.Min.Y, r.Min.X, r.Max.Y+1), black) // y axis
	fill(img, image.Rect(r.Min.X-1, r.Max.Y, r.Max.X, r.Max.Y+1), black) // x axis

	// Titles.
	drawText(img, p.Title, r.Min.X+(r.Dx()-textWidth(p.Title))/2, r.Min.Y-20, black)
	drawText(img, p.XLabel, r.Min.X+(r.Dx()-textWidth(p.XLabel))/2, r.Max.Y+25, black)
	drawTextUp(img, p.YLabel, r.Min.X-marginL+4, r.Min.Y+r.Dy()/2)

	// Series, then the legend on top of them.
	for i, s := range series {
		c := palette[i%len(palette)]
		if len(s.X) == 1 { // a lone point gets a small square marker
			x, y := px(s.X[0]), py(s.Y[0])
			fill(img, image.Rect(x-2, y-2, x+3, y+3).Intersect(r), c)
		}
		for j := 1; j < len(s.X); j++ {
			line(img, r, px(s.X[j-1]), py(s.Y[j-1]), px(s.X[j]), py(s.Y[j]), c)
		}
	}
	lr := placeLegend(img, r, series) // series is not empty: some point was kept
	fill(img, lr, black)
	fill(img, lr.Inset(1), color.White)
	for i, s := range series {
		y := lr.Min.Y + 4 + 15*i
		fill(img, image.Rect(lr.Min.X+6, y+5, lr.Min.X+26, y+9), palette[i%len(palette)])
		drawText(img, s.Name, lr.Min.X+32, y, black)
	}
	return lr, nil
}

// placeLegend returns the legend box: the corner of r covering the fewest
// series pixels already drawn, preferring bottom-right, then top-left.
func placeLegend(img *image.RGBA, r image.Rectangle, series []Series) image.Rectangle {
	w := 0
	for _, s := range series {
		w = max(w, textWidth(s.Name))
	}
	size := image.Pt(w+38, 15*len(series)+8)
	best, bestN := image.Rectangle{}, -1
	for _, at := range []image.Point{
		r.Max.Sub(size).Sub(image.Pt(8, 8)), r.Min.Add(image.Pt(8, 8)), // bottom-right, top-left
		image.Pt(r.Max.X-size.X-8, r.Min.Y+8), image.Pt(r.Min.X+8, r.Max.Y-size.Y-8),
	} {
		box, n := image.Rectangle{Min: at, Max: at.Add(size)}, 0
		for y := box.Min.Y; y < box.Max.Y; y++ {
			for x := box.Min.X; x < box.Max.X; x++ {
				if c := img.RGBAAt(x, y); c != grid && c != (color.RGBA{255, 255, 255, 255}) {
					n++
				}
			}
		}
		if bestN < 0 || n < bestN {
			best, bestN = box, n
		}
	}
	return best
}

// axis maps data values to [0,1] and carries its labelled ticks.
type axis struct {
	lo, hi float64
	log    bool
	ticks  []float64
	labels []string
	minor  []float64 // unlabelled ticks (log axes: 2..9 × 10^k)
}

// frac maps v to its relative position on the axis, 0 at lo and 1 at hi.
func (a axis) frac(v float64) float64 {
	if a.log {
		return (math.Log10(v) - math.Log10(a.lo)) / (math.Log10(a.hi) - math.Log10(a.lo))
	}
	return (v - a.lo) / (a.hi - a.lo)
}

// linearAxis builds an axis over [lo, hi] (lo < hi) with about 5 ticks at a
// 1/2/5×10^k step; snap widens the range to whole steps.
func linearAxis(lo, hi float64, snap bool) axis {
	step := niceStep((hi - lo) / 5)
	if snap {
		lo, hi = math.Floor(lo/step)*step, math.Ceil(hi/step)*step
	}
	a := axis{lo: lo, hi: hi}
	dec := max(0, int(math.Ceil(-math.Log10(step)-1e-9)))
	for i := math.Ceil(lo/step - 1e-9); i*step <= hi+step*1e-9; i++ {
		v := i * step
		if v == 0 {
			v = 0 // no "-0"
		}
		a.ticks = append(a.ticks, v)
		a.labels = append(a.labels, strconv.FormatFloat(v, 'f', dec, 64))
	}
	return a
}

// niceStep rounds raw to 1, 2 or 5 × 10^k.
func niceStep(raw float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5} {
		if raw/p < m*1.5 { // thresholds 1.5, 3, 7.5
			return m * p
		}
	}
	return 10 * p
}

// logAxis builds a log axis over [lo, hi] (both > 0) padded to whole
// decades, labelling each decade (or every n-th when there are many).
func logAxis(lo, hi float64) axis {
	d0, d1 := math.Floor(math.Log10(lo)+1e-9), math.Ceil(math.Log10(hi)-1e-9) // 1e-9: 1000 is decade 3
	if d1 <= d0 {
		d1 = d0 + 1
	}
	a := axis{lo: math.Pow(10, d0), hi: math.Pow(10, d1), log: true}
	every := math.Ceil((d1 - d0) / 8)
	for d := d0; d <= d1; d++ {
		v := math.Pow(10, d)
		if math.Mod(d-d0, every) == 0 {
			a.ticks = append(a.ticks, v)
			a.labels = append(a.labels, strconv.FormatFloat(v, 'g', -1, 64)) // "1e+06" for a million
		}
		for m := 2.0; m <= 9 && d < d1; m++ {
			a.minor = append(a.minor, m*v)
		}
	}
	return a
}

// line draws a 2 px thick Bresenham line from (x0,y0) to (x1,y1), clipped to clip.
func line(img *image.RGBA, clip image.Rectangle, x0, y0, x1, y1 int, c color.RGBA) {
	dx, dy := max(x1-x0, x0-x1), -max(y1-y0, y0-y1)
	sx, sy := cmp.Compare(x1, x0), cmp.Compare(y1, y0)
	ox, oy := 0, -1 // thicken across the main direction
	if dx < -dy {
		ox, oy = 1, 0
	}
	for e := dx + dy; ; {
		for _, p := range []image.Point{{x0, y0}, {x0 + ox, y0 + oy}} {
			if p.In(clip) {
				img.SetRGBA(p.X, p.Y, c)
			}
		}
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			x0 += sx
		}
		if e2 <= dx {
			e += dx
			y0 += sy
		}
	}
}

func isFinite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// fill paints rectangle r in colour c.
func fill(img *image.RGBA, r image.Rectangle, c color.Color) {
	draw.Draw(img, r, image.NewUniform(c), image.Point{}, draw.Src)
}

// ascii makes s drawable with basicfont, which only has printable ASCII.
var ascii = strings.NewReplacer("→", "->", "←", "<-", "≤", "<=", "≥", ">=", "…", "...", "×", "x", "µ", "u")

func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, ascii.Replace(s))
}

// textWidth is the width of s in pixels.
func textWidth(s string) int { return font.MeasureString(face, printable(s)).Ceil() }

// drawText draws s with its top-left corner at (x, y).
func drawText(img draw.Image, s string, x, y int, c color.Color) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: face, Dot: fixed.P(x, y+face.Ascent)}
	d.DrawString(printable(s))
}

// drawTextUp draws s rotated 90° counter-clockwise (reading bottom to top),
// its left edge at x and vertically centred on yc.
func drawTextUp(img *image.RGBA, s string, x, yc int) {
	w := textWidth(s)
	tmp := image.NewAlpha(image.Rect(0, 0, w, face.Height))
	drawText(tmp, s, 0, 0, color.Opaque)
	y0 := yc + w/2
	for ty := 0; ty < face.Height; ty++ {
		for tx := 0; tx < w; tx++ {
			if tmp.AlphaAt(tx, ty).A > 127 {
				img.SetRGBA(x+ty, y0-tx, black)
			}
		}
	}
}
