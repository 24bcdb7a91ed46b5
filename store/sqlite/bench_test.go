package sqlite_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/store"
	"github.com/taskpipe/taskpipe/store/sqlite"
)

// benchSpec is a typical task spec, shared by every benchmark run.
var benchSpec = json.RawMessage(`{"output_schema":{"type":"json","json_schema":{"type":"object",` +
	`"properties":{"ceo":{"type":"string"},"founded":{"type":"integer"}},` +
	`"required":["ceo","founded"]}}}`)

// benchOutput is a typical completed output with one basis entry per field.
var benchOutput = json.RawMessage(`{"type":"json","content":{"ceo":"Jane Doe","founded":1999},` +
	`"basis":[{"field":"ceo","citations":[{"url":"https://example.com/about","title":null,` +
	`"excerpts":["Jane Doe is the chief executive"]}],"reasoning":"synthetic output","confidence":"low"},` +
	`{"field":"founded","citations":[],"reasoning":"synthetic output","confidence":"low"}],` +
	`"mcp_tool_calls":null,"beta_fields":null}`)

// cpuTime returns the CPU time the process has used so far, so that the
// benchmarks can report CPU per run, which other load on the machine
// distorts less than wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// report adds runs/s and CPU µs per run for n runs per iteration.
func report(b *testing.B, cpu0 time.Duration, unit string, n int) {
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), unit+"/s")
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N*n), "cpu-µs/"+unit)
}

// benchStore opens a fresh store with one group.
func benchStore(b *testing.B) *sqlite.Store {
	b.Helper()
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	if err := s.CreateGroup(ctx, store.Group{ID: "g", CreatedAt: time.Now()}); err != nil {
		b.Fatal(err)
	}
	return s
}

// benchRuns makes n runs of group g, named after batch.
func benchRuns(batch, n int) []store.Run {
	now := time.Now()
	runs := make([]store.Run, n)
	for i := range runs {
		runs[i] = store.Run{
			ID:        fmt.Sprintf("trun_%08d_%04d", batch, i),
			GroupID:   "g",
			Owner:     "owner",
			Processor: "lite",
			Input: json.RawMessage(fmt.Sprintf(`{"input":{"company":"Company %d","website":`+
				`"company%d.example"},"processor":"lite","metadata":{"row":%d}}`, i, i, i)),
			SpecHash:  "spec-1",
			CreatedAt: now,
		}
	}
	return runs
}

// add stores one batch of 1,000 runs.
func add(b *testing.B, s *sqlite.Store, batch int) {
	_, err := s.AddRuns(context.Background(), "g", benchRuns(batch, 1000),
		map[string]json.RawMessage{"spec-1": benchSpec})
	if err != nil {
		b.Fatal(err)
	}
}

// claimFinish claims and finishes 1,000 runs in batches of size.
func claimFinish(b *testing.B, s *sqlite.Store, size int) {
	ctx := context.Background()
	for done := 0; done < 1000; {
		now := time.Now()
		runs, err := s.ClaimRuns(ctx, store.Claim{Processor: "lite", Node: "n1", Limit: size,
			Now: now, LeaseUntil: now.Add(time.Minute)})
		if err != nil || len(runs) == 0 {
			b.Fatalf("claim: %d runs, %v", len(runs), err)
		}
		fs := make([]store.Finish, len(runs))
		for i, r := range runs {
			fs[i] = store.Finish{RunID: r.ID, Node: "n1", Status: api.StatusCompleted,
				Output: benchOutput, At: now}
		}
		res, err := s.FinishRuns(ctx, fs)
		if err != nil || len(res.Applied) != len(fs) {
			b.Fatalf("finish: %d applied, %v", len(res.Applied), err)
		}
		done += len(runs)
	}
}

// BenchmarkAddRuns1000 adds batches of 1,000 runs to one group.
func BenchmarkAddRuns1000(b *testing.B) {
	s := benchStore(b)
	batch := 0
	cpu0 := cpuTime()
	for b.Loop() {
		add(b, s, batch)
		batch++
	}
	report(b, cpu0, "run", 1000)
}

// BenchmarkClaimFinish1000 claims and finishes 1,000 queued runs in
// batches of 100, logging 1,000 run state events and 10 status events.
func BenchmarkClaimFinish1000(b *testing.B) {
	s := benchStore(b)
	batch := 0
	var cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		add(b, s, batch)
		batch++
		b.StartTimer()
		cpu0 := cpuTime()
		claimFinish(b, s, 100)
		cpu += cpuTime() - cpu0
	}
	report(b, cpuTime()-cpu, "run", 1000)
}

// BenchmarkListEvents1000 reads 1,000 run state events with their runs in
// one page, as an event stream catching up does.
func BenchmarkListEvents1000(b *testing.B) {
	s := benchStore(b)
	add(b, s, 0)
	claimFinish(b, s, 1000)
	ctx := context.Background()
	cpu0 := cpuTime()
	for b.Loop() {
		evs, err := s.ListEvents(ctx, "g", 1, 1000)
		if err != nil || len(evs) != 1000 {
			b.Fatalf("list: %d events, %v", len(evs), err)
		}
	}
	report(b, cpu0, "event", 1000)
}

// BenchmarkLifecycle1000 is the store's share of the engine target for
// 1,000 runs: add them in one batch, claim and finish them in batches of
// 100, then stream their outputs back through ListRuns.
func BenchmarkLifecycle1000(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	batch := 0
	after := int64(0)
	cpu0 := cpuTime()
	for b.Loop() {
		add(b, s, batch)
		batch++
		claimFinish(b, s, 100)
		runs, err := s.ListRuns(ctx, "g", after, "", 1000)
		if err != nil || len(runs) != 1000 {
			b.Fatalf("list: %d runs, %v", len(runs), err)
		}
		after = runs[len(runs)-1].Seq
	}
	report(b, cpu0, "run", 1000)
}

// BenchmarkFinishRuns1000 finishes 1,000 claimed runs in batches of 100,
// reporting the CPU of FinishRuns alone.
func BenchmarkFinishRuns1000(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	batch := 0
	var cpu time.Duration
	for b.Loop() {
		add(b, s, batch)
		batch++
		for done := 0; done < 1000; {
			now := time.Now()
			runs, err := s.ClaimRuns(ctx, store.Claim{Processor: "lite", Node: "n1", Limit: 100,
				Now: now, LeaseUntil: now.Add(time.Minute)})
			if err != nil || len(runs) == 0 {
				b.Fatalf("claim: %d runs, %v", len(runs), err)
			}
			fs := make([]store.Finish, len(runs))
			for i, r := range runs {
				fs[i] = store.Finish{RunID: r.ID, Node: "n1", Status: api.StatusCompleted,
					Output: benchOutput, At: now}
			}
			cpu0 := cpuTime()
			res, err := s.FinishRuns(ctx, fs)
			cpu += cpuTime() - cpu0
			if err != nil || len(res.Applied) != len(fs) {
				b.Fatalf("finish: %d applied, %v", len(res.Applied), err)
			}
			done += len(runs)
		}
	}
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N*1000), "finish-cpu-µs/run")
}
