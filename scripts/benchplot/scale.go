package main

import (
	"math"
	"strconv"
	"strings"
)

// scale maps data values in [lo, hi] to pixels in [from, to], linearly or
// by their logarithm.
type scale struct {
	lo, hi   float64
	from, to float64
	log      bool
}

func (s scale) pos(v float64) float64 {
	var t float64
	if s.log {
		v = math.Max(v, s.lo)
		t = (math.Log10(v) - math.Log10(s.lo)) / (math.Log10(s.hi) - math.Log10(s.lo))
	} else {
		t = (v - s.lo) / (s.hi - s.lo)
	}
	return s.from + t*(s.to-s.from)
}

// ticks are the values to mark on the scale's axis.
func (s scale) ticks() []float64 {
	if s.log {
		return logTicks(s.lo, s.hi)
	}
	return linearTicks(s.lo, s.hi, 6)
}

// niceStep is the 1, 2 or 5 × 10^k step that cuts span into the number
// of intervals closest to n.
func niceStep(span float64, n int) float64 {
	if span <= 0 || n < 1 {
		return 1
	}
	mag := math.Pow(10, math.Floor(math.Log10(span/float64(n))))
	best := mag
	for _, m := range []float64{2, 5, 10} {
		if math.Abs(span/(m*mag)-float64(n)) < math.Abs(span/best-float64(n)) {
			best = m * mag
		}
	}
	return best
}

// niceMax rounds hi up to a whole number of the step used to cut [0, hi]
// into about n intervals; at least 1.
func niceMax(hi float64, n int) float64 {
	if hi <= 0 {
		return 1
	}
	step := niceStep(hi, n)
	return math.Ceil(hi/step-1e-9) * step
}

// linearTicks are the multiples of a nice step inside [lo, hi].
func linearTicks(lo, hi float64, n int) []float64 {
	step := niceStep(hi-lo, n)
	var out []float64
	for i := math.Ceil(lo/step - 1e-9); i*step <= hi+step*1e-9; i++ {
		out = append(out, roundTo(i*step, step))
	}
	return out
}

// logTicks are the 1, 2 and 5 × 10^k inside [lo, hi]; only the powers of
// ten when the range spans more than three decades.
func logTicks(lo, hi float64) []float64 {
	if lo <= 0 || hi <= lo {
		return nil
	}
	mults := []float64{1, 2, 5}
	if math.Log10(hi/lo) > 3 {
		mults = []float64{1}
	}
	var out []float64
	for k := math.Floor(math.Log10(lo)); k <= math.Ceil(math.Log10(hi)); k++ {
		for _, m := range mults {
			v := m * math.Pow(10, k)
			if v >= lo*(1-1e-9) && v <= hi*(1+1e-9) {
				out = append(out, roundTo(v, math.Pow(10, k)))
			}
		}
	}
	return out
}

// logBounds widens [lo, hi] (both > 0) to the nearest 1, 2 or 5 × 10^k.
func logBounds(lo, hi float64) (float64, float64) {
	down := func(v float64) float64 {
		mag := math.Pow(10, math.Floor(math.Log10(v)))
		for _, m := range []float64{5, 2, 1} {
			if m*mag <= v*(1+1e-9) {
				return roundTo(m*mag, mag)
			}
		}
		return mag
	}
	up := func(v float64) float64 {
		mag := math.Pow(10, math.Floor(math.Log10(v)))
		for _, m := range []float64{1, 2, 5, 10} {
			if m*mag >= v*(1-1e-9) {
				return roundTo(m*mag, mag)
			}
		}
		return 10 * mag
	}
	lo, hi = down(lo), up(hi)
	if hi <= lo {
		hi = up(lo * 1.01)
	}
	return lo, hi
}

// roundTo removes the floating-point noise of a multiple of step.
func roundTo(v, step float64) float64 {
	d := decimals(step) + 2
	r, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'f', d, 64), 64)
	if r == 0 {
		return 0 // not -0
	}
	return r
}

// decimals is how many decimals show a multiple of step.
func decimals(step float64) int {
	if step <= 0 || step >= 1 {
		return 0
	}
	return int(math.Ceil(-math.Log10(step) - 1e-9))
}

// tickLabel writes a tick value without floating-point noise.
func tickLabel(v float64) string {
	return strconv.FormatFloat(roundTo(v, 1e-6), 'f', -1, 64)
}

// humanCount writes a count the way the axes and legends show it:
// 950, 10k, 2.5k, 1.2M.
func humanCount(v float64) string {
	short := func(v float64) string { return strings.TrimSuffix(strconv.FormatFloat(v, 'f', 1, 64), ".0") }
	switch a := math.Abs(v); {
	case a >= 1e6:
		return short(v/1e6) + "M"
	case a >= 1e3:
		return short(v/1e3) + "k"
	}
	return tickLabel(v)
}

// ms writes a latency in milliseconds with three significant digits at
// most: 0.42, 3.1, 12.5, 250.
func ms(v float64) string {
	switch a := math.Abs(v); {
	case a >= 100:
		return strconv.FormatFloat(math.Round(v), 'f', -1, 64)
	case a >= 10:
		return strconv.FormatFloat(math.Round(v*10)/10, 'f', -1, 64)
	}
	return strconv.FormatFloat(math.Round(v*100)/100, 'f', -1, 64)
}

// percentile is the nearest-rank p-quantile (0 < p ≤ 1) of sorted values.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted))-1e-9)) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
