package main

import (
	"math"
	"slices"
	"testing"
)

func TestNiceMax(t *testing.T) {
	for _, c := range []struct {
		hi   float64
		n    int
		want float64
	}{
		{0, 6, 1},
		{1, 6, 1},
		{3.1, 6, 3.5},
		{95, 6, 100},
		{100, 6, 100},
		{101, 6, 120},
		{3436, 6, 3500},
		{100_000, 6, 100_000},
		{0.042, 5, 0.05},
	} {
		if got := niceMax(c.hi, c.n); !near(got, c.want) {
			t.Errorf("niceMax(%v, %d) = %v, want %v", c.hi, c.n, got, c.want)
		}
	}
}

func TestLinearTicks(t *testing.T) {
	for _, c := range []struct {
		lo, hi float64
		want   []float64
	}{
		{0, 1, []float64{0, 0.2, 0.4, 0.6, 0.8, 1}},
		{0, 100_000, []float64{0, 20_000, 40_000, 60_000, 80_000, 100_000}},
		{0, 3500, []float64{0, 500, 1000, 1500, 2000, 2500, 3000, 3500}},
		{0, 0.3, []float64{0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3}},
		{12, 47, []float64{15, 20, 25, 30, 35, 40, 45}},
	} {
		if got := linearTicks(c.lo, c.hi, 6); !slices.Equal(got, c.want) {
			t.Errorf("linearTicks(%v, %v) = %v, want %v", c.lo, c.hi, got, c.want)
		}
	}
}

func TestLogTicksAndBounds(t *testing.T) {
	for _, c := range []struct {
		min, max       float64
		wantLo, wantHi float64
		want           []float64
	}{
		{1.2, 31, 1, 50, []float64{1, 2, 5, 10, 20, 50}},
		{0.35, 4.1, 0.2, 5, []float64{0.2, 0.5, 1, 2, 5}},
		{2, 2000, 2, 2000, []float64{2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000}},
		{0.9, 12_000, 0.5, 20_000, []float64{1, 10, 100, 1000, 10_000}}, // over three decades: powers of ten
	} {
		lo, hi := logBounds(c.min, c.max)
		if !near(lo, c.wantLo) || !near(hi, c.wantHi) {
			t.Errorf("logBounds(%v, %v) = %v, %v, want %v, %v", c.min, c.max, lo, hi, c.wantLo, c.wantHi)
		}
		if got := logTicks(lo, hi); !slices.Equal(got, c.want) {
			t.Errorf("logTicks(%v, %v) = %v, want %v", lo, hi, got, c.want)
		}
	}
}

func TestScalePos(t *testing.T) {
	lin := scale{lo: 0, hi: 100, from: 50, to: 450}
	logs := scale{lo: 1, hi: 100, from: 0, to: 200, log: true}
	for _, c := range []struct {
		s       scale
		v, want float64
	}{
		{lin, 0, 50},
		{lin, 50, 250},
		{lin, 100, 450},
		{scale{lo: 0, hi: 1, from: 400, to: 70}, 0.5, 235}, // y grows upwards
		{logs, 1, 0},
		{logs, 10, 100},
		{logs, 100, 200},
		{logs, 0, 0}, // clamped to the bottom of the scale
	} {
		if got := c.s.pos(c.v); !near(got, c.want) {
			t.Errorf("%+v.pos(%v) = %v, want %v", c.s, c.v, got, c.want)
		}
	}
}

func TestPercentile(t *testing.T) {
	hundred := make([]float64, 100)
	for i := range hundred {
		hundred[i] = float64(i + 1)
	}
	for _, c := range []struct {
		sorted  []float64
		p, want float64
	}{
		{nil, 0.5, 0},
		{[]float64{7}, 0.5, 7},
		{[]float64{7}, 0.99, 7},
		{[]float64{1, 2, 3, 4}, 0.5, 2},
		{[]float64{1, 2, 3, 4, 5}, 0.5, 3},
		{hundred, 0.5, 50},
		{hundred, 0.99, 99},
		{hundred, 1, 100},
		{hundred[:10], 0.99, 10},
	} {
		if got := percentile(c.sorted, c.p); got != c.want {
			t.Errorf("percentile(%v, %v) = %v, want %v", c.sorted, c.p, got, c.want)
		}
	}
}

func TestLabels(t *testing.T) {
	for _, c := range []struct {
		got, want string
	}{
		{tickLabel(0.1 + 0.2), "0.3"},
		{tickLabel(math.Copysign(0, -1)), "0"},
		{tickLabel(2500), "2500"},
		{humanCount(0), "0"},
		{humanCount(950), "950"},
		{humanCount(2500), "2.5k"},
		{humanCount(100_000), "100k"},
		{humanCount(1_260_000), "1.3M"},
		{ms(0.4234), "0.42"},
		{ms(3.1), "3.1"},
		{ms(12.46), "12.5"},
		{ms(249.6), "250"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

func TestCDFSteps(t *testing.T) {
	xs, ys := cdfSteps([]float64{1, 2, 4}, 100)
	wantX := []float64{1, 1, 1, 2, 2, 4, 4}
	wantY := []float64{0, 0, 1.0 / 3, 1.0 / 3, 2.0 / 3, 2.0 / 3, 1}
	if !slices.Equal(xs, wantX) || !slices.EqualFunc(ys, wantY, near) {
		t.Errorf("cdfSteps = %v, %v, want %v, %v", xs, ys, wantX, wantY)
	}
	// Thinned: at most about maxSteps steps, ending at the largest value.
	many := make([]float64, 10_000)
	for i := range many {
		many[i] = float64(i)
	}
	xs, ys = cdfSteps(many, 100)
	if len(xs) > 2*100+3 || xs[len(xs)-1] != 9999 || ys[len(ys)-1] != 1 {
		t.Errorf("thinned cdfSteps: %d points, ends at (%v, %v)", len(xs), xs[len(xs)-1], ys[len(ys)-1])
	}
}

func TestTargetLine(t *testing.T) {
	xs, ys := targetLine(point{agents: 1000, rssMiB: 100}, 33_768)
	// 32,768 more agents × 30 KiB = 960 MiB.
	if !slices.Equal(xs, []float64{1000, 33_768}) || !near(ys[0], 100) || !near(ys[1], 1060) {
		t.Errorf("targetLine = %v, %v", xs, ys)
	}
}

func near(a, b float64) bool {
	d := a - b
	return d < 1e-9 && d > -1e-9
}
