package main

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"strings"
)

// palette is a set of colours that stay apart for colour-blind readers
// (Tableau 10).
var palette = []string{"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#9c755f"}

const (
	font      = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
	inkDark   = "#222"
	inkMuted  = "#666"
	gridColor = "#e6e6e6"
)

// chart is one plot being written: a frame with axes, grid, title and
// legend, and the series drawn inside it.
type chart struct {
	width, height            float64
	title, subtitle          string
	xLabel, yLabel           string
	x, y                     scale
	xTick, yTick             func(float64) string
	legend                   []legendEntry
	legendAt                 string // "top-left" or "bottom-right"
	body                     bytes.Buffer
	left, right, top, bottom float64
}

type legendEntry struct {
	label, color string
	dashed, dots bool
}

// newChart lays out a width × height chart; the scales' domains are set
// by the caller, their pixel ranges here.
func newChart(width, height float64) *chart {
	c := &chart{width: width, height: height, left: 78, right: 28, top: 70, bottom: 62,
		xTick: tickLabel, yTick: tickLabel, legendAt: "top-left"}
	c.x.from, c.x.to = c.left, width-c.right
	c.y.from, c.y.to = height-c.bottom, c.top
	return c
}

func (c *chart) printf(format string, args ...any) { fmt.Fprintf(&c.body, format, args...) }

// text writes an escaped text element.
func (c *chart) text(x, y, size float64, color, anchor, extra, s string) {
	c.printf(`<text x="%.1f" y="%.1f" font-size="%g" fill="%s" text-anchor="%s"%s>%s</text>`+"\n",
		x, y, size, color, anchor, extra, esc(s))
}

// polyline draws a line through points, in data coordinates.
func (c *chart) polyline(xs, ys []float64, color string, dashed bool) {
	var pts strings.Builder
	for i := range xs {
		fmt.Fprintf(&pts, "%.1f,%.1f ", c.x.pos(xs[i]), c.y.pos(ys[i]))
	}
	dash := ""
	if dashed {
		dash = ` stroke-dasharray="7 5"`
	}
	c.printf(`<polyline points="%s" fill="none" stroke="%s" stroke-width="2.2" stroke-linejoin="round" stroke-linecap="round"%s/>`+"\n",
		strings.TrimSpace(pts.String()), color, dash)
}

// dot draws a point marker, in data coordinates.
func (c *chart) dot(x, y float64, color string, hollow bool) {
	fill := color
	if hollow {
		fill = "#fff"
	}
	c.printf(`<circle cx="%.1f" cy="%.1f" r="4.2" fill="%s" stroke="%s" stroke-width="2"/>`+"\n",
		c.x.pos(x), c.y.pos(y), fill, color)
}

// svg writes the whole document: frame, grid, axes, the body, legend.
func (c *chart) svg() []byte {
	var b bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="%s">`+"\n",
		c.width, c.height, c.width, c.height, font)
	p(`<rect width="100%%" height="100%%" fill="#fff"/>` + "\n")
	p(`<text x="%.1f" y="28" font-size="18" font-weight="600" fill="%s">%s</text>`+"\n", c.left, inkDark, esc(c.title))
	if c.subtitle != "" {
		p(`<text x="%.1f" y="48" font-size="12.5" fill="%s">%s</text>`+"\n", c.left, inkMuted, esc(c.subtitle))
	}
	x0, x1, y0, y1 := c.x.from, c.x.to, c.y.from, c.y.to
	// Grid and tick labels.
	for _, v := range c.x.ticks() {
		px := c.x.pos(v)
		p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", px, y0, px, y1, gridColor)
		p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", px, y0, px, y0+5, inkDark)
		p(`<text x="%.1f" y="%.1f" font-size="12.5" fill="%s" text-anchor="middle">%s</text>`+"\n", px, y0+20, inkDark, esc(c.xTick(v)))
	}
	for _, v := range c.y.ticks() {
		py := c.y.pos(v)
		p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", x0, py, x1, py, gridColor)
		p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", x0-5, py, x0, py, inkDark)
		p(`<text x="%.1f" y="%.1f" font-size="12.5" fill="%s" text-anchor="end">%s</text>`+"\n", x0-9, py+4.5, inkDark, esc(c.yTick(v)))
	}
	// Axes.
	p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="1.2"/>`+"\n", x0, y0, x1, y0, inkDark)
	p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="1.2"/>`+"\n", x0, y0, x0, y1, inkDark)
	p(`<text x="%.1f" y="%.1f" font-size="14" fill="%s" text-anchor="middle">%s</text>`+"\n", (x0+x1)/2, c.height-16, inkDark, esc(c.xLabel))
	p(`<text transform="translate(20 %.1f) rotate(-90)" font-size="14" fill="%s" text-anchor="middle">%s</text>`+"\n", (y0+y1)/2, inkDark, esc(c.yLabel))
	// Data, clipped to the plot area.
	p(`<clipPath id="plot"><rect x="%.1f" y="%.1f" width="%.1f" height="%.1f"/></clipPath>`+"\n", x0-6, y1-6, x1-x0+12, y0-y1+12)
	p(`<g clip-path="url(#plot)">` + "\n")
	b.Write(c.body.Bytes())
	p("</g>\n")
	c.writeLegend(&b)
	p("</svg>\n")
	return b.Bytes()
}

// writeLegend draws the legend box in a corner of the plot area.
func (c *chart) writeLegend(b *bytes.Buffer) {
	if len(c.legend) == 0 {
		return
	}
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	const row, pad, swatch = 21.0, 10.0, 30.0
	w := 0.0
	for _, e := range c.legend {
		w = max(w, textWidth(e.label, 13))
	}
	w += swatch + 8 + 2*pad
	h := float64(len(c.legend))*row + 2*pad - 4
	x, y := c.x.from+14, c.y.to+10
	if c.legendAt == "bottom-right" {
		x, y = c.x.to-14-w, c.y.from-14-h
	}
	p(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" rx="4" fill="#fff" fill-opacity="0.92" stroke="#ccc"/>`+"\n", x, y, w, h)
	for i, e := range c.legend {
		cy := y + pad + 8 + float64(i)*row
		dash := ""
		if e.dashed {
			dash = ` stroke-dasharray="7 5"`
		}
		p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2.2"%s/>`+"\n", x+pad, cy, x+pad+swatch, cy, e.color, dash)
		if e.dots {
			p(`<circle cx="%.1f" cy="%.1f" r="4.2" fill="%s" stroke="%s" stroke-width="2"/>`+"\n", x+pad+swatch/2, cy, e.color, e.color)
		}
		p(`<text x="%.1f" y="%.1f" font-size="13" fill="%s">%s</text>`+"\n", x+pad+swatch+8, cy+4.5, inkDark, esc(e.label))
	}
}

// textWidth estimates the width of s in a sans-serif font of size px:
// enough to size a legend box.
func textWidth(s string, px float64) float64 {
	w := 0.0
	for _, r := range s {
		switch {
		case strings.ContainsRune("il.,:;|!'·() ", r):
			w += 0.34
		case r >= '0' && r <= '9':
			w += 0.64
		case r >= 'A' && r <= 'Z', r == 'm', r == 'w', r == '%':
			w += 0.76
		default:
			w += 0.6
		}
	}
	return w * px
}

func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
