package pipeline

import (
	"context"
	"errors"
	"sync"

	"github.com/taskpipe/taskpipe/sinks"
)

// writer applies the follower's writes in the order they were sent, in two
// stages on their own goroutines: the sink stage upserts rows into the
// sinks, then the state stage settles their state and records cursors. So
// reading the next runs, writing the last batch and settling the one
// before overlap, while each row is still settled only after its sink
// write, and a cursor recorded only after every write sent before it: a
// recorded cursor never passes a run whose row is not written and settled.
type writer struct {
	*runner
	jobs   chan writeJob // to the sink stage
	states chan writeJob // from the sink stage to the state stage
	// done is closed when both stages have returned; err is then the
	// first error.
	done    chan struct{}
	errOnce sync.Once
	err     error
	cancel  context.CancelFunc
}

// writeJob is one write: finished runs' rows and the statuses to settle
// them with, a cursor update, or (with synced set) a barrier.
type writeJob struct {
	rows   []sinks.Row
	settle map[string]string

	cursors                bool
	runCursor, eventCursor string

	synced chan struct{}
}

// writerQueue is how many writes may wait before each stage. Writes that
// queue while the sinks are busy are written together (see sinkStage).
const writerQueue = 6

// maxCoalesced bounds the rows of queued writes joined into one sink write.
// A DuckDB commit costs far more than its rows when the batch is small (it
// writes the WAL and, past a threshold, checkpoints): 1,000,000 rows with
// a basis took 13 s in batches of 8,000 and under 5 s in batches of
// 100,000. Joining only what queued keeps batches small, and rows visible
// at once, while results trickle in.
const maxCoalesced = 50_000

// startWriter starts the writer's stages; they run until stop or ctx ends,
// or one fails.
func startWriter(ctx context.Context, r *runner) *writer {
	ctx, cancel := context.WithCancel(ctx)
	w := &writer{runner: r, jobs: make(chan writeJob, writerQueue),
		states: make(chan writeJob, writerQueue), done: make(chan struct{}), cancel: cancel}
	stateDone := make(chan struct{})
	go func() {
		defer close(stateDone)
		w.stateStage(ctx)
	}()
	go func() {
		defer close(w.done)
		defer cancel()
		w.sinkStage(ctx)
		close(w.states)
		<-stateDone
	}()
	return w
}

// fail records the first error and stops both stages.
func (w *writer) fail(err error) {
	w.errOnce.Do(func() { w.err = err })
	w.cancel()
}

// sinkStage writes the jobs' rows to the sinks, those of jobs that queued
// meanwhile in one write, and passes the jobs on in order.
func (w *writer) sinkStage(ctx context.Context) {
	for {
		var batch []writeJob
		select {
		case <-ctx.Done():
			w.fail(ctx.Err())
			return
		case j, ok := <-w.jobs:
			if !ok {
				return
			}
			batch = append(batch, j)
		}
		rows, open := w.coalesce(&batch)
		if len(rows) > 0 {
			if err := w.writeSinks(ctx, rows); err != nil {
				w.fail(err)
				return
			}
		}
		for _, job := range batch {
			job.rows = nil
			select {
			case w.states <- job:
			case <-ctx.Done():
				w.fail(ctx.Err())
				return
			}
		}
		if !open {
			return
		}
	}
}

// coalesce adds the jobs already queued to batch, up to maxCoalesced rows,
// and returns all their rows in order; open is false once the queue is
// closed.
func (w *writer) coalesce(batch *[]writeJob) (rows []sinks.Row, open bool) {
	n := len((*batch)[0].rows)
	for n < maxCoalesced {
		select {
		case j, ok := <-w.jobs:
			if !ok {
				return joinRows(*batch, n), false
			}
			*batch = append(*batch, j)
			n += len(j.rows)
		default:
			return joinRows(*batch, n), true
		}
	}
	return joinRows(*batch, n), true
}

// joinRows returns the rows of the jobs in order, n in all.
func joinRows(jobs []writeJob, n int) []sinks.Row {
	if len(jobs) == 1 {
		return jobs[0].rows
	}
	rows := make([]sinks.Row, 0, n)
	for _, j := range jobs {
		rows = append(rows, j.rows...)
	}
	return rows
}

// stateStage settles rows, records cursors and releases barriers, in order.
func (w *writer) stateStage(ctx context.Context) {
	for job := range w.states {
		if err := w.applyState(ctx, job); err != nil {
			w.fail(err)
			return
		}
	}
}

// applyState carries out the state part of one job.
func (w *writer) applyState(ctx context.Context, job writeJob) error {
	switch {
	case job.synced != nil:
		close(job.synced)
		return nil
	case job.cursors:
		return w.state.setCursors(ctx, w.opts.Target, job.runCursor, job.eventCursor)
	}
	w.mu.Lock()
	inPass, err := w.state.settle(ctx, job.settle, w.pass)
	w.mu.Unlock()
	if err != nil {
		return err
	}
	w.countSettled(inPass)
	return nil
}

// errWriterStopped reports a send to a writer that has stopped without an
// error of its own.
var errWriterStopped = errors.New("result writer stopped")

// stopped returns the error a stopped writer reports.
func (w *writer) stopped() error {
	if w.err != nil {
		return w.err
	}
	return errWriterStopped
}

// send queues a write; it fails with the writer's error once it has one.
func (w *writer) send(ctx context.Context, job writeJob) error {
	select {
	case w.jobs <- job:
		return nil
	case <-w.done:
		return w.stopped()
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
		return w.stopped()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stop ends the writer after the writes already sent, and waits for it.
func (w *writer) stop() {
	close(w.jobs)
	<-w.done
}
