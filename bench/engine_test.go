package bench_test

import (
	"context"
	"testing"
	"time"

	"github.com/taskpipe/taskpipe/bench"
	"github.com/taskpipe/taskpipe/engine"
	"github.com/taskpipe/taskpipe/processors"
)

// startLocal runs an engine (over HTTP when asked) for one test.
func startLocal(tb testing.TB, backends map[string]engine.Backend, overHTTP bool) *bench.Local {
	tb.Helper()
	l, err := bench.StartLocal(context.Background(), tb.TempDir(), backends, overHTTP)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = l.Stop(context.Background()) })
	return l
}

func TestGroup_CountsEveryRun(t *testing.T) {
	for _, overHTTP := range []bool{false, true} {
		l := startLocal(t, processors.Default(nil), overHTTP)
		res, err := bench.Group(context.Background(), l.Groups, bench.GroupOptions{Runs: 2500, Chunk: 1000, Processor: "synthetic"})
		if err != nil {
			t.Fatalf("over HTTP %v: %v", overHTTP, err)
		}
		if res.Completed != 2500 || res.StreamedBytes == 0 {
			t.Fatalf("over HTTP %v: result = %+v, want 2500 completed with outputs", overHTTP, res)
		}
	}
}

// BenchmarkGroup100k is the engine-overhead target: 100,000 runs of the
// synthetic processor at zero latency, from the first add to the last
// output read over the runs stream, in-process.
func BenchmarkGroup100k(b *testing.B) {
	benchGroup(b, false)
}

// BenchmarkGroup100kHTTP is the same through the HTTP server and client on
// loopback.
func BenchmarkGroup100kHTTP(b *testing.B) {
	benchGroup(b, true)
}

func benchGroup(b *testing.B, overHTTP bool) {
	l := startLocal(b, processors.Default(nil), overHTTP)
	for b.Loop() {
		res, err := bench.Group(context.Background(), l.Groups, bench.GroupOptions{Runs: 100000, Chunk: 1000, Processor: "synthetic"})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(res.RunsPerSecond(), "runs/s")
		b.Logf("%s", res)
	}
}

// BenchmarkSlowRuns10k is the many-slow-runs target: 10,000 runs of 2 s
// simulated latency each.
func BenchmarkSlowRuns10k(b *testing.B) {
	slow, err := processors.NewSynthetic(processors.SyntheticOptions{
		Latency: processors.LatencyOptions{Distribution: processors.LatencyFixed, Mean: 2 * time.Second},
	})
	if err != nil {
		b.Fatal(err)
	}
	l := startLocal(b, map[string]engine.Backend{"slow": {Processor: slow, Concurrency: 10000}}, false)
	for b.Loop() {
		res, err := bench.Group(context.Background(), l.Groups, bench.GroupOptions{Runs: 10000, Chunk: 1000, Processor: "slow"})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(res.Streamed.Seconds(), "wall-s")
		b.ReportMetric(float64(res.PeakRSS)/(1<<20), "peak-rss-MB")
		b.Logf("%s", res)
	}
}
