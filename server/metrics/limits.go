package metrics

import "github.com/prometheus/client_golang/prometheus"

// limitMetrics count what a node's limits turned away.
type limitMetrics struct {
	connsRefused *prometheus.CounterVec
	pollsRefused prometheus.Counter
}

func (lm *limitMetrics) register(reg *prometheus.Registry) {
	lm.connsRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tether_comms_connections_refused_total",
		Help: "Comms connections past max_connections, by how they were refused: answered (each request answered UNAVAILABLE, then closed), closed (past the ceiling: closed at accept, unanswered).",
	}, []string{"how"})
	lm.pollsRefused = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tether_polls_refused_total",
		Help: "Polls that would have waited past max_waiting_polls, answered RESOURCE_EXHAUSTED with a retry delay.",
	})
	reg.MustRegister(lm.connsRefused, lm.pollsRefused)
}

// ConnRefused counts a comms connection refused past the limit: how is
// "answered" or "closed".
func (m *Metrics) ConnRefused(how string) {
	if m != nil {
		m.limits.connsRefused.WithLabelValues(how).Inc()
	}
}

// PollRefused counts a poll refused past the limit of waiting polls.
func (m *Metrics) PollRefused() {
	if m != nil {
		m.limits.pollsRefused.Inc()
	}
}
