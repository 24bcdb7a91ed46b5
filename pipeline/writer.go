package pipeline

import (
	"context"
	"errors"

	"github.com/taskpipe/taskpipe/sinks"
)

// writer applies the follower's writes in the order they were sent, on its
// own goroutine: rows go to the sinks, then their state is settled; a
// cursor update is recorded only after every write sent before it, so a
// recorded cursor never passes a run whose row is not written.
type writer struct {
	*runner
	jobs chan writeJob
	// done is closed when run returns; err is then the first error.
	done chan struct{}
	err  error
}

// writeJob is one write: finished runs' rows and the statuses to settle
// them with, a cursor update, or (with synced set) a barrier.
type writeJob struct {
	rows                              []sinks.Row
	settle                            map[string]string
	completed, failed, cancelled, bad int64

	cursors                bool
	runCursor, eventCursor string

	synced chan struct{}
}

// writerQueue is how many writes may wait: two batches in flight are
// enough to overlap reading with writing.
const writerQueue = 2

func newWriter(r *runner) *writer {
	return &writer{runner: r, jobs: make(chan writeJob, writerQueue), done: make(chan struct{})}
}

// run applies writes until stop or ctx ends, or one fails.
func (w *writer) run(ctx context.Context) {
	defer close(w.done)
	for {
		select {
		case <-ctx.Done():
			w.err = ctx.Err()
			return
		case job, ok := <-w.jobs:
			if !ok {
				return
			}
			if err := w.apply(ctx, job); err != nil {
				w.err = err
				return
			}
		}
	}
}

// apply carries out one write.
func (w *writer) apply(ctx context.Context, job writeJob) error {
	switch {
	case job.synced != nil:
		close(job.synced)
		return nil
	case job.cursors:
		return w.state.setCursors(ctx, w.opts.Target, job.runCursor, job.eventCursor)
	}
	if err := w.writeSinks(ctx, job.rows); err != nil {
		return err
	}
	w.mu.Lock()
	n, err := w.state.settle(ctx, job.settle, w.pass)
	w.mu.Unlock()
	if err != nil {
		return err
	}
	w.outstanding.Add(-n)
	w.counts.completed.Add(job.completed)
	w.counts.failed.Add(job.failed)
	w.counts.cancelled.Add(job.cancelled)
	w.counts.badOutputs.Add(job.bad)
	return nil
}

// errWriterStopped reports a send to a writer that has stopped without an
// error of its own.
var errWriterStopped = errors.New("result writer stopped")

// send queues a write; it fails with the writer's error once it has one.
func (w *writer) send(ctx context.Context, job writeJob) error {
	select {
	case w.jobs <- job:
		return nil
	case <-w.done:
		if w.err != nil {
			return w.err
		}
		return errWriterStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sync waits until every write sent so far is applied.
func (w *writer) sync(ctx context.Context) error {
	synced := make(chan struct{})
	if err := w.send(ctx, writeJob{synced: synced}); err != nil {
		return err
	}
	select {
	case <-synced:
		return nil
	case <-w.done:
		if w.err != nil {
			return w.err
		}
		return errWriterStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stop ends the writer after the writes already sent, and waits for it.
func (w *writer) stop() {
	close(w.jobs)
	<-w.done
}
