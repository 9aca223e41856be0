package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Inventory is what the metrics read of the domain inventory.
type Inventory interface {
	Counts() map[string]int
	Dropped() uint64
	Failed() uint64
}

// inventoryVerdicts are the verdicts whose series exist from the start.
var inventoryVerdicts = []string{"pass", "flag", "hold", "defer", "reject"}

// inventoryCollector exports the domains by verdict as of the last write.
type inventoryCollector struct {
	inv  Inventory
	desc *prometheus.Desc
}

func (c inventoryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c inventoryCollector) Collect(ch chan<- prometheus.Metric) {
	counts := c.inv.Counts()
	for _, v := range inventoryVerdicts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(counts[v]), v)
	}
}

// WatchInventory exports the inventory: its domains by verdict and the
// decisions it could not record.
func (m *Metrics) WatchInventory(inv Inventory) {
	m.reg.MustRegister(
		inventoryCollector{inv: inv, desc: prometheus.NewDesc("mxguard_inventory_domains",
			"Domains in the inventory by current verdict (fleet-wide with a fleet cache).", []string{"verdict"}, nil)},
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "mxguard_inventory_dropped_total", Help: "Decisions not recorded in the inventory: its queue was full, or its store refused the batch.",
		}, func() float64 { return float64(inv.Dropped() + inv.Failed()) }),
	)
}

// WatchNotify registers mxguard_notify_total and returns what counts it.
func (m *Metrics) WatchNotify() func(result string) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mxguard_notify_total", Help: "Webhook notifications of verdict changes by result: sent, retried (an attempt failed), failed (given up), dropped (queue full).",
	}, []string{"result"})
	for _, r := range []string{"sent", "retried", "failed", "dropped"} {
		c.WithLabelValues(r)
	}
	m.reg.MustRegister(c)
	return func(result string) { c.WithLabelValues(result).Inc() }
}
