// Package metrics holds the server's Prometheus metrics: one registry per
// node, served at /metrics on the management listener.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are a node's instruments. A nil *Metrics is valid and records
// nothing, so packages can take one optionally.
type Metrics struct {
	reg *prometheus.Registry

	ordersCreated   *prometheus.CounterVec
	ordersFinished  *prometheus.CounterVec
	deliveryLatency prometheus.Histogram
	finishLatency   prometheus.Histogram
	sweeperExpired  prometheus.Counter
	eventsIn        *prometheus.CounterVec
	eventBytesIn    *prometheus.CounterVec
	rejected        *prometheus.CounterVec
	ingest          ingestMetrics
	limits          limitMetrics
	polls           pollMetrics
}

// latencyBuckets span 1 ms to about 2 minutes.
var latencyBuckets = prometheus.ExponentialBuckets(0.001, 2.5, 14)

// New returns a registry with the process and Go collectors and Tether's
// instruments.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.ordersCreated = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tether_orders_created_total", Help: "Orders created, by action and target type.",
	}, []string{"action", "target"})
	m.ordersFinished = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tether_orders_finished_total", Help: "Orders that reached a final status through this node, by action and status.",
	}, []string{"action", "status"})
	m.deliveryLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "tether_order_delivery_seconds", Help: "Time from an order's creation to its first delivery to its agent.", Buckets: latencyBuckets,
	})
	m.finishLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "tether_order_completion_seconds", Help: "Time from an order's creation to its result.", Buckets: latencyBuckets,
	})
	m.sweeperExpired = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tether_sweeper_timed_out_total", Help: "Orders this node's sweeper failed as timed out.",
	})
	m.eventsIn = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tether_events_received_total", Help: "Events accepted from agents, by module.",
	}, []string{"module"})
	m.eventBytesIn = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tether_event_payload_bytes_total", Help: "Event payload bytes accepted from agents, by module.",
	}, []string{"module"})
	m.rejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tether_requests_rejected_total", Help: "Requests refused, by API, method and code.",
	}, []string{"api", "method", "code"})
	m.reg.MustRegister(m.ordersCreated, m.ordersFinished, m.deliveryLatency, m.finishLatency,
		m.sweeperExpired, m.eventsIn, m.eventBytesIn, m.rejected)
	m.ingest.register(m.reg)
	m.limits.register(m.reg)
	m.polls.register(m.reg)
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Gauge registers a gauge whose value f reports at scrape time.
func (m *Metrics) Gauge(name, help string, f func() float64) {
	if m == nil {
		return
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
}

// OrderCreated counts n orders created for an action and target type.
func (m *Metrics) OrderCreated(action, target string, n int) {
	if m != nil {
		m.ordersCreated.WithLabelValues(action, target).Add(float64(n))
	}
}

// OrderDelivered records the first delivery of an order created at created.
func (m *Metrics) OrderDelivered(created, now time.Time) {
	if m != nil {
		m.deliveryLatency.Observe(now.Sub(created).Seconds())
	}
}

// OrderFinished records an order's result.
func (m *Metrics) OrderFinished(action, status string, created, now time.Time) {
	if m != nil {
		m.ordersFinished.WithLabelValues(action, status).Inc()
		m.finishLatency.Observe(now.Sub(created).Seconds())
	}
}

// OrdersTimedOut counts orders failed by the sweeper.
func (m *Metrics) OrdersTimedOut(n int) {
	if m != nil && n > 0 {
		m.sweeperExpired.Add(float64(n))
	}
}

// EventsReceived counts accepted events of a module and their payload bytes.
func (m *Metrics) EventsReceived(module string, n, bytes int) {
	if m != nil {
		m.eventsIn.WithLabelValues(module).Add(float64(n))
		m.eventBytesIn.WithLabelValues(module).Add(float64(bytes))
	}
}

// Rejected counts a refused request.
func (m *Metrics) Rejected(api, method, code string) {
	if m != nil {
		m.rejected.WithLabelValues(api, method, code).Inc()
	}
}
