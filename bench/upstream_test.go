package bench_test

import (
	"context"
	"testing"
	"time"

	"github.com/taskpipe/taskpipe/bench"
	"github.com/taskpipe/taskpipe/processors"
)

const (
	addCalls   = "POST /v1/tasks/groups/{taskgroup_id}/runs"
	groupPolls = "GET /v1/tasks/groups/{taskgroup_id}"
	events     = "GET /v1/tasks/groups/{taskgroup_id}/events"
)

func TestUpstream_CountsCalls(t *testing.T) {
	res, err := bench.Upstream(context.Background(), bench.UpstreamOptions{
		Dir:  t.TempDir(),
		Runs: 2000,
		Latency: processors.LatencyOptions{Distribution: processors.LatencyUniform,
			Min: 500 * time.Millisecond, Max: 1500 * time.Millisecond},
		PollInterval: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", res)
	f, p := res.Forwarded, res.Polling
	if f[addCalls] < 2 || f[addCalls] > 3 {
		t.Errorf("parallel processor: %d add calls for 2,000 runs, want 2 or 3", f[addCalls])
	}
	if f[groupPolls] != 0 || f[events] < 1 {
		t.Errorf("parallel processor: %d group polls and %d events streams, want none and at least one",
			f[groupPolls], f[events])
	}
	if p[addCalls] != 20 || p[groupPolls] < 1 {
		t.Errorf("polling pattern: %d add calls and %d polls, want 20 and at least one", p[addCalls], p[groupPolls])
	}
}

// BenchmarkUpstream10k is the upstream-economy target: 10,000 runs through
// the parallel processor against a taskpipe server with 5-15 s of
// synthetic latency per run, compared with the polling pattern of
// Parallel's docs against the same server.
func BenchmarkUpstream10k(b *testing.B) {
	for b.Loop() {
		res, err := bench.Upstream(context.Background(), bench.UpstreamOptions{Dir: b.TempDir(), Runs: 10000})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(res.Forwarded[addCalls]), "adds")
		b.ReportMetric(float64(res.Forwarded[events]), "event-streams")
		b.Logf("\n%s", res)
	}
}
