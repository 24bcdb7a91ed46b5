package pipeline_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/taskpipe/taskpipe/pipeline"
	"github.com/taskpipe/taskpipe/sources"
	"github.com/taskpipe/taskpipe/specs"
)

// countPending counts the harness's pending rows with retryFailed.
func (h *harness) countPending(retryFailed bool) pipeline.PendingRows {
	h.t.Helper()
	src, err := sources.NewParquet(sources.ParquetOptions{Paths: []string{h.source}})
	if err != nil {
		h.t.Fatal(err)
	}
	defer src.Close()
	got, err := pipeline.CountPending(context.Background(), pipeline.PendingOptions{
		Source: src, Key: []string{"id"}, TaskSpec: h.spec,
		Target:   pipeline.TargetID(specs.Target{Engine: specs.EngineEmbedded}, ""),
		StateDir: filepath.Join(h.dir, "state"), RetryFailed: retryFailed,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return got
}

func TestCountPending_CountsOnlyRowsARunWouldSubmit(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, 100, true) // every 10th row is invalid input
	h.synth.FailureRate = 0.3

	// Before any run every valid row is pending, and nothing is created.
	got := h.countPending(false)
	if want := (pipeline.PendingRows{Rows: 100, Submit: 90, Invalid: 10}); got != want {
		t.Errorf("before a run: %+v, want %+v", got, want)
	}
	if _, err := os.Stat(filepath.Join(h.dir, "state")); !os.IsNotExist(err) {
		t.Errorf("state dir after counting: %v, want it not created", err)
	}

	// After a run of the first 60 rows, only the other 40 are pending
	// (36 valid); failed rows count only with retryFailed.
	sum, err := h.run(ctx, func(o *pipeline.Options) { o.Limit = 60 })
	if err != nil {
		t.Fatal(err)
	}
	failed := sum.Statuses["failed"]
	if failed == 0 {
		t.Fatalf("first run: no failed rows: %+v", sum)
	}
	got = h.countPending(false)
	if want := (pipeline.PendingRows{Rows: 100, Submit: 36, Skipped: 54, Invalid: 10}); got != want {
		t.Errorf("after 60 rows: %+v, want %+v", got, want)
	}
	got = h.countPending(true)
	if got.Submit != 36+failed || got.Skipped != 54-failed {
		t.Errorf("with retry of %d failed rows: %+v", failed, got)
	}

	// A run holding the state lock does not stop the count.
	lock, err := pipeline.LockState(filepath.Join(h.dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	if got := h.countPending(false); got.Submit != 36 {
		t.Errorf("with the state locked: %+v, want 36 to submit", got)
	}
}
