package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ingestMetrics are the instruments of event ingest.
type ingestMetrics struct {
	batches     *prometheus.CounterVec
	throttled   *prometheus.CounterVec
	sinkLatency *prometheus.HistogramVec
	sinkErrors  *prometheus.CounterVec
}

// sinkBuckets span 100 µs to about 26 s.
var sinkBuckets = prometheus.ExponentialBuckets(0.0001, 2.5, 14)

func (im *ingestMetrics) register(reg *prometheus.Registry) {
	im.batches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tether_event_batches_total",
		Help: "Event batches pushed by agents and ingested, by result: stored (new), completed (a delivery cut short, finished by the retry), duplicate (a retry of a delivered batch: nothing written).",
	}, []string{"result"})
	im.throttled = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tether_ingest_throttled_total",
		Help: "Event pushes refused with RESOURCE_EXHAUSTED and a retry delay, by limit: agent_events, agent_bytes (an agent's rate), inflight_requests, inflight_bytes (the node's budget).",
	}, []string{"limit"})
	im.sinkLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "tether_sink_write_seconds", Help: "Time an event sink took to accept (durably hold) a batch, by sink.", Buckets: sinkBuckets,
	}, []string{"sink"})
	im.sinkErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tether_sink_write_errors_total", Help: "Batch writes an event sink failed, by sink.",
	}, []string{"sink"})
	reg.MustRegister(im.batches, im.throttled, im.sinkLatency, im.sinkErrors)
}

// BatchIngested counts an event batch by its ingest result.
func (m *Metrics) BatchIngested(result string) {
	if m != nil {
		m.ingest.batches.WithLabelValues(result).Inc()
	}
}

// Throttled counts a push refused by a rate limit or the in-flight budget.
func (m *Metrics) Throttled(limit string) {
	if m != nil {
		m.ingest.throttled.WithLabelValues(limit).Inc()
	}
}

// SinkWrite records one batch write of a sink, with its duration.
func (m *Metrics) SinkWrite(sink string, d time.Duration, err error) {
	if m == nil {
		return
	}
	m.ingest.sinkLatency.WithLabelValues(sink).Observe(d.Seconds())
	if err != nil {
		m.ingest.sinkErrors.WithLabelValues(sink).Inc()
	}
}
