package metrics

import "github.com/prometheus/client_golang/prometheus"

// pollMetrics count how polls were served.
type pollMetrics struct {
	looksSkipped prometheus.Counter
}

func (pm *pollMetrics) register(reg *prometheus.Registry) {
	pm.looksSkipped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tether_poll_looks_skipped_total",
		Help: "Polls of quiet agents served without looking at the store: their last poll found nothing and nothing was notified for them since.",
	})
	reg.MustRegister(pm.looksSkipped)
}

// PollLookSkipped counts a poll served without a look at the store.
func (m *Metrics) PollLookSkipped() {
	if m != nil {
		m.polls.looksSkipped.Inc()
	}
}
