package bench_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/taskpipe/taskpipe/bench"
	"github.com/taskpipe/taskpipe/engine"
	"github.com/taskpipe/taskpipe/processors"
	"github.com/taskpipe/taskpipe/store/sqlite"
)

// startEngine runs an engine on a fresh SQLite file with the given
// processors and stops it when the test ends.
func startEngine(tb testing.TB, backends map[string]engine.Backend) *engine.Engine {
	tb.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(tb.TempDir(), "bench.db"))
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	eng, err := engine.New(engine.Options{Store: st, Backends: backends, Node: "bench"})
	if err != nil {
		tb.Fatalf("new engine: %v", err)
	}
	if err := eng.Start(ctx); err != nil {
		tb.Fatalf("start engine: %v", err)
	}
	tb.Cleanup(func() {
		_ = eng.Stop(ctx)
		_ = st.Close()
	})
	return eng
}

func TestGroup_CountsEveryRun(t *testing.T) {
	eng := startEngine(t, processors.Default(nil))
	res, err := bench.Group(context.Background(), eng, bench.GroupOptions{Runs: 2500, Chunk: 1000, Processor: "synthetic"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Completed != 2500 || res.StreamedBytes == 0 {
		t.Fatalf("result = %+v, want 2500 completed with outputs", res)
	}
}

// BenchmarkGroup100k is the engine-overhead target: 100,000 runs of the
// synthetic processor at zero latency, from the first add to the last
// output read over the runs stream.
func BenchmarkGroup100k(b *testing.B) {
	eng := startEngine(b, processors.Default(nil))
	for b.Loop() {
		res, err := bench.Group(context.Background(), eng, bench.GroupOptions{Runs: 100000, Chunk: 1000, Processor: "synthetic"})
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
	eng := startEngine(b, map[string]engine.Backend{"slow": {Processor: slow, Concurrency: 10000}})
	for b.Loop() {
		res, err := bench.Group(context.Background(), eng, bench.GroupOptions{Runs: 10000, Chunk: 1000, Processor: "slow"})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(res.Streamed.Seconds(), "wall-s")
		b.ReportMetric(float64(res.PeakRSS)/(1<<20), "peak-rss-MB")
		b.Logf("%s", res)
	}
}
