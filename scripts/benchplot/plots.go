package main

import (
	"cmp"
	"fmt"
	"math"
	"slices"
)

// targetPerAgent is the memory budget per connected agent the server aims
// at.
const targetPerAgent = 30 << 10 // bytes

const mib = 1 << 20

// point is one report's server memory: agents connected, RSS in MiB.
type point struct{ agents, rssMiB, perAgent float64 }

// memorySeries splits the reports' points into Tether's and the
// baseline's, each sorted by agents; reports without agents or RSS give
// no point, nor do runs that pushed events (their memory is the ingest's).
func memorySeries(reports []report) (tether, baseline []point) {
	add := func(r report) {
		if r.AgentsConnected <= 0 || r.Server.RSSBytes <= 0 || r.Config.EventsPerSecond > 0 {
			return
		}
		pt := point{float64(r.AgentsConnected), float64(r.Server.RSSBytes) / mib, r.perAgentBytes()}
		if r.isBaseline() {
			baseline = append(baseline, pt)
		} else {
			tether = append(tether, pt)
		}
	}
	for _, r := range reports {
		add(r)
		if r.Baseline != nil {
			b := *r.Baseline
			if b.Target == "" {
				b.Target = "baseline"
			}
			add(b)
		}
	}
	byAgents := func(a, b point) int { return cmp.Compare(a.agents, b.agents) }
	slices.SortStableFunc(tether, byAgents)
	slices.SortStableFunc(baseline, byAgents)
	return tether, baseline
}

// targetLine is the 30 KiB per agent line from the first point to the
// largest agent count.
func targetLine(first point, maxAgents float64) (xs, ys []float64) {
	return []float64{first.agents, maxAgents},
		[]float64{first.rssMiB, first.rssMiB + (maxAgents-first.agents)*targetPerAgent/mib}
}

func memoryPlot(reports []report) ([]byte, bool) {
	tether, baseline := memorySeries(reports)
	if len(tether)+len(baseline) == 0 {
		return nil, false
	}
	maxX, maxY := 0.0, 0.0
	for _, p := range slices.Concat(tether, baseline) {
		maxX, maxY = math.Max(maxX, p.agents), math.Max(maxY, p.rssMiB)
	}
	var tx, ty []float64
	if len(tether) > 0 {
		tx, ty = targetLine(tether[0], maxX)
		maxY = math.Max(maxY, ty[1])
	}
	c := newChart(820, 500)
	c.title = "Server memory per connected agent"
	c.subtitle = machineLine(reports)
	c.xLabel, c.yLabel = "agents connected", "server RSS (MiB)"
	c.x.lo, c.x.hi = 0, niceMax(maxX, 6)
	c.y.lo, c.y.hi = 0, niceMax(maxY*1.05, 6)
	c.xTick = humanCount
	c.legendAt = "top-left"

	if tx != nil && tx[1] > tx[0] {
		c.polyline(tx, ty, inkMuted, true)
		c.legend = append(c.legend, legendEntry{label: "target: +30 KiB per agent from the first point", color: inkMuted, dashed: true})
	}
	draw := func(pts []point, name, color string) {
		if len(pts) == 0 {
			return
		}
		xs, ys := make([]float64, len(pts)), make([]float64, len(pts))
		for i, p := range pts {
			xs[i], ys[i] = p.agents, p.rssMiB
		}
		c.polyline(xs, ys, color, false)
		for _, p := range pts {
			c.dot(p.agents, p.rssMiB, color, false)
		}
		last := pts[len(pts)-1]
		label := name
		if last.perAgent > 0 {
			label = fmt.Sprintf("%s (%.0f KiB/agent at %s)", name, last.perAgent/1024, humanCount(last.agents))
		}
		c.legend = append(c.legend, legendEntry{label: label, color: color, dots: true})
	}
	draw(tether, "Tether", palette[0])
	draw(baseline, "baseline: bare Go HTTP/2 server", palette[1])
	return c.svg(), true
}

// curve is one report's latency samples, sorted. A report and its
// baseline share a colour; the baseline's curve is dashed.
type curve struct {
	name     string
	sorted   []float64
	p50, p99 float64
	color    int
	dashed   bool
}

func latencyCurves(reports []report) []curve {
	var out []curve
	color := -1
	add := func(r report) {
		if len(r.CommandLatency.SamplesMs) == 0 {
			return
		}
		s := slices.Clone(r.CommandLatency.SamplesMs)
		slices.Sort(s)
		out = append(out, curve{name: r.name(), sorted: s, p50: percentile(s, 0.5), p99: percentile(s, 0.99),
			color: color, dashed: r.isBaseline()})
	}
	// Fewer agents first, whatever the order of the files.
	reports = slices.Clone(reports)
	slices.SortStableFunc(reports, func(a, b report) int {
		return cmp.Compare(max(a.AgentsConnected, a.Agents), max(b.AgentsConnected, b.Agents))
	})
	for _, r := range reports {
		color++
		add(r)
		if r.Baseline != nil {
			b := *r.Baseline
			if b.Target == "" {
				b.Target = "baseline"
			}
			if b.Label == "" || b.Label == r.Label {
				b.Label = r.name()
			}
			add(b)
		}
	}
	return out
}

// cdfSteps is the empirical CDF of sorted values as a staircase, with at
// most about maxSteps steps (evenly spaced ranks when there are more
// values).
func cdfSteps(sorted []float64, maxSteps int) (xs, ys []float64) {
	n := len(sorted)
	if n == 0 {
		return nil, nil
	}
	step := max(1, n/maxSteps)
	xs, ys = []float64{sorted[0]}, []float64{0}
	for i := step - 1; ; i += step {
		i = min(i, n-1)
		xs = append(xs, sorted[i], sorted[i])
		ys = append(ys, ys[len(ys)-1], float64(i+1)/float64(n))
		if i == n-1 {
			break
		}
	}
	return xs, ys
}

func latencyPlot(reports []report) ([]byte, bool) {
	curves := latencyCurves(reports)
	if len(curves) == 0 {
		return nil, false
	}
	lo, hi := math.Inf(1), 0.0
	for _, cv := range curves {
		for _, v := range cv.sorted {
			if v > 0 {
				lo = math.Min(lo, v)
			}
		}
		hi = math.Max(hi, cv.sorted[len(cv.sorted)-1])
	}
	c := newChart(820, 500)
	c.title = "Single-command latency"
	c.subtitle = machineLine(reports)
	c.xLabel, c.yLabel = "latency (ms)", "fraction of commands ≤ latency"
	c.y.lo, c.y.hi = 0, 1
	c.legendAt = "bottom-right"
	// A log scale when the samples span more than a factor of 20.
	if hi > 0 && !math.IsInf(lo, 1) && hi/lo > 20 {
		c.x.log = true
		c.x.lo, c.x.hi = logBounds(lo, hi)
		c.xLabel = "latency (ms, log scale)"
	} else {
		c.x.lo, c.x.hi = 0, niceMax(hi, 6)
	}
	// Guides at the marked fractions.
	for _, g := range []struct {
		y    float64
		name string
	}{{0.5, "p50"}, {0.99, "p99"}} {
		py := c.y.pos(g.y)
		c.printf(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#999" stroke-dasharray="3 4"/>`+"\n", c.x.from, py, c.x.to, py)
		dy := -5.0
		if g.y > 0.9 {
			dy = 14 // below, clear of the frame's top
		}
		c.text(c.x.from+6, py+dy, 11.5, inkMuted, "start", "", g.name)
	}
	for _, cv := range curves {
		color := palette[cv.color%len(palette)]
		xs, ys := cdfSteps(cv.sorted, 2000)
		c.polyline(xs, ys, color, cv.dashed)
		c.dot(cv.p50, 0.5, color, true)
		c.dot(cv.p99, 0.99, color, true)
		c.legend = append(c.legend, legendEntry{color: color, dashed: cv.dashed, label: fmt.Sprintf("%s (n=%d): p50 %s ms, p99 %s ms",
			cv.name, len(cv.sorted), ms(cv.p50), ms(cv.p99))})
	}
	return c.svg(), true
}
