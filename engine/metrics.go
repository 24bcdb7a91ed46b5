package engine

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/store"
)

// metrics are the engine's Prometheus collectors.
type metrics struct {
	runs     *prometheus.CounterVec   // runs by processor and outcome
	inflight *prometheus.GaugeVec     // runs executing on this node
	latency  *prometheus.HistogramVec // attempt duration by processor
}

// queueDepthDesc describes the queue depth, read from the store when
// scraped so that it counts every node's runs and survives restarts.
var queueDepthDesc = prometheus.NewDesc("taskpipe_queue_depth",
	"Runs queued and waiting for a processor slot, by processor (all nodes).",
	[]string{"processor"}, nil)

// queueCollector reports the queue depth from the store.
type queueCollector struct {
	store store.Store
}

func (c queueCollector) Describe(ch chan<- *prometheus.Desc) { ch <- queueDepthDesc }

func (c queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	depth, err := c.store.QueueDepth(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(queueDepthDesc, err)
		return
	}
	for p, n := range depth {
		ch <- prometheus.MustNewConstMetric(queueDepthDesc, prometheus.GaugeValue, float64(n), p)
	}
}

func newMetrics(reg prometheus.Registerer, st store.Store) (*metrics, error) {
	m := &metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "taskpipe_runs_total",
			Help: "Runs submitted and finished, by processor and status (submitted, completed, failed, cancelled, retried).",
		}, []string{"processor", "status"}),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "taskpipe_runs_executing",
			Help: "Runs executing on this node, by processor.",
		}, []string{"processor"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "taskpipe_processor_duration_seconds",
			Help:    "Time from dispatch to outcome of one run attempt, by processor.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 12),
		}, []string{"processor"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.runs, m.inflight, m.latency, queueCollector{st}} {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *metrics) submitted(runs []store.Run) {
	for i := range runs {
		m.runs.WithLabelValues(runs[i].Processor, "submitted").Inc()
	}
}

func (m *metrics) observe(processor string, status api.RunStatus, took time.Duration) {
	m.runs.WithLabelValues(processor, string(status)).Inc()
	m.latency.WithLabelValues(processor).Observe(took.Seconds())
}
