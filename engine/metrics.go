package engine

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/store"
)

// metrics are the engine's Prometheus collectors.
type metrics struct {
	runs       *prometheus.CounterVec   // runs by processor and outcome
	queueDepth *prometheus.GaugeVec     // runs queued on this node's watch
	inflight   *prometheus.GaugeVec     // runs executing on this node
	latency    *prometheus.HistogramVec // attempt duration by processor
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "taskpipe_runs_total",
			Help: "Runs submitted and finished, by processor and status (submitted, completed, failed, cancelled, retried).",
		}, []string{"processor", "status"}),
		queueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "taskpipe_queue_depth",
			Help: "Runs waiting for a processor slot, by processor, as seen by this node.",
		}, []string{"processor"}),
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
	for _, c := range []prometheus.Collector{m.runs, m.queueDepth, m.inflight, m.latency} {
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
