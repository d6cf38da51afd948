package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tetherhq/tether"
)

// ordersRefresh is how old the orders gauge may be: counting reads every
// stored order, so scrapes closer together share one count.
const ordersRefresh = 10 * time.Second

// ordersCountTimeout bounds one count; a scrape that hits it reports the
// previous figures.
const ordersCountTimeout = 5 * time.Second

// OrdersByStatus registers the gauge tether_orders{status, action}: the
// orders held by the store, counted by count at scrape time (at most every
// ten seconds). Every node of a cluster reports the same, shared figures.
func (m *Metrics) OrdersByStatus(count func(ctx context.Context) ([]tether.OrderCount, error)) {
	if m == nil {
		return
	}
	m.reg.MustRegister(&ordersCollector{
		count: count,
		desc: prometheus.NewDesc("tether_orders", "Orders held by the store, by status and action (shared by every node; refreshed at most every 10s).",
			[]string{"status", "action"}, nil),
	})
}

type ordersCollector struct {
	count func(ctx context.Context) ([]tether.OrderCount, error)
	desc  *prometheus.Desc

	mu   sync.Mutex
	at   time.Time
	last []tether.OrderCount
}

func (c *ordersCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *ordersCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) >= ordersRefresh {
		ctx, cancel := context.WithTimeout(context.Background(), ordersCountTimeout)
		counts, err := c.count(ctx)
		cancel()
		switch {
		case err == nil:
			c.last, c.at = counts, time.Now()
		case time.Since(c.at) > 6*ordersRefresh:
			c.last = nil // too old to show
		}
	}
	for _, n := range c.last {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n.N), string(n.Status), n.Action)
	}
}
