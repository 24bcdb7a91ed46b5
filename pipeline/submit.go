package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"golang.org/x/sync/errgroup"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/sinks"
)

// errLimitReached stops the source read at --limit.
var errLimitReached = errors.New("limit reached")

// submitter reads the source, decides what each row needs and adds runs in
// chunks within the rate limit. Reading and deciding run on one goroutine,
// adding on another, so the next rows are read while a chunk is added.
type submitter struct {
	*runner
	// chunk and chunkRows hold the runs decided and not yet handed to the
	// adder; only the reading goroutine uses them.
	chunk     []api.TaskRunInput
	chunkRows []rowState
	// batchKeys catches a key repeated inside one source batch.
	batchKeys map[string]bool
	// adds carries chunks to the adding goroutine.
	adds chan addJob
}

// addJob is one add-runs call: the runs and the rows they serve.
type addJob struct {
	inputs []api.TaskRunInput
	rows   []rowState
}

// addQueue is how many chunks may wait for the adding goroutine.
const addQueue = 2

// submitAll reads every source row (up to the limit) and submits the rows
// that need a run. It returns when the last chunk is added.
func (r *runner) submitAll(ctx context.Context) error {
	s := &submitter{runner: r, adds: make(chan addJob, addQueue)}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.addAll(gctx) })
	g.Go(func() error {
		defer close(s.adds)
		if err := s.readAll(gctx); err != nil {
			return err
		}
		return s.flush(gctx)
	})
	return g.Wait()
}

// readAll reads the source and decides every row, handing full chunks to
// the adder.
func (s *submitter) readAll(ctx context.Context) error {
	r := s.runner
	err := r.opts.Source.Read(ctx, r.opts.BatchSize, func(b Batch) error {
		rows := b.Rows
		if lim := r.opts.Limit; lim > 0 {
			if b.Offset >= lim {
				return errLimitReached
			}
			if b.Offset+int64(len(rows)) > lim {
				rows = rows[:lim-b.Offset]
			}
		}
		if err := s.batch(ctx, b.Offset, rows); err != nil {
			return err
		}
		if lim := r.opts.Limit; lim > 0 && b.Offset+int64(len(rows)) >= lim {
			return errLimitReached
		}
		return nil
	})
	if err != nil && !errors.Is(err, errLimitReached) {
		return fmt.Errorf("read source: %w", err)
	}
	return nil
}

// batch maps one source batch, whose first row is the source's row
// offset+1, and acts on every row.
func (s *submitter) batch(ctx context.Context, offset int64, rows [][]any) error {
	// Map every row first; look the keys up in one query.
	mapped := make([]mappedRow, len(rows))
	keys := make([]string, 0, len(rows))
	for i, row := range rows {
		mapped[i] = s.mapper.mapRow(row)
		keys = append(keys, mapped[i].Key)
	}
	s.counts.read.Add(int64(len(rows)))

	if err := s.decide(ctx, offset, mapped, keys); err != nil {
		return err
	}
	for len(s.chunk) >= s.opts.ChunkSize {
		if err := s.emit(ctx, s.opts.ChunkSize); err != nil {
			return err
		}
	}
	return nil
}

// decide looks the rows up in the state store, acts on each and records
// their new states, under the lock the follower settles rows with, so that a
// row is never counted as outstanding after its result was written.
func (s *submitter) decide(ctx context.Context, offset int64, mapped []mappedRow, keys []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	states, err := s.state.rows(ctx, keys)
	if err != nil {
		return err
	}
	s.batchKeys = make(map[string]bool, len(mapped))
	var (
		put     []rowState
		invalid []mappedRow
	)
	for i, m := range mapped {
		prev, seen := states[m.Key]
		switch {
		case m.NullKey:
			// Every such row is invalid, none a duplicate of another: each
			// has a state of its own, under its source row number.
			row := offset + int64(i) + 1
			m.Key = fmt.Sprintf("\x00NULL key, source row %d", row)
			m.Invalid = fmt.Sprintf("%s; source row %d", m.Invalid, row)
			s.nullKey(row, m)
		case (seen && prev.Pass == s.pass) || s.batchKeys[m.Key]:
			s.duplicate(m)
			continue
		}
		s.batchKeys[m.Key] = true
		kv, err := json.Marshal(m.KeyValues)
		if err != nil {
			return fmt.Errorf("encode key %q: %w", m.Key, err)
		}
		next := rowState{Key: m.Key, KeyValues: string(kv), Fingerprint: m.Fingerprint,
			SpecHash: s.specHash, Pass: s.pass}

		switch {
		case m.Invalid != "":
			invalid = append(invalid, m)
			next.Status = StatusInvalidInput
		case seen && prev.Fingerprint == m.Fingerprint && prev.SpecHash == s.specHash &&
			s.keep(prev):
			// Same input, same spec: keep what the row has.
			next = prev
			next.Pass = s.pass
		default:
			next.Status = stateSubmitting
			next.GroupID = s.groupID
			s.chunk = append(s.chunk, s.runInput(m))
			s.chunkRows = append(s.chunkRows, next)
		}
		put = append(put, next)
	}

	// Invalid rows go to the sinks before their state says so.
	if len(invalid) > 0 {
		out := make([]sinks.Row, 0, len(invalid))
		for _, m := range invalid {
			out = append(out, s.builder.invalidRow(m))
		}
		if err := s.writeSinks(ctx, out); err != nil {
			return err
		}
		s.counts.invalid.Add(int64(len(invalid)))
	}
	return s.state.putRows(ctx, put)
}

// keep decides, for a row whose input and spec did not change, whether its
// current state stands (true) or it needs a new run (false); it counts the
// rows it keeps.
func (s *submitter) keep(prev rowState) bool {
	switch keepState(prev, s.groupID, s.opts.RetryFailed) {
	case rowSkipped:
		s.counts.skipped.Add(1)
		return true
	case rowReattached:
		s.counts.reattached.Add(1)
		s.outstanding.Add(1)
		return true
	}
	return false
}

// rowFate is what a pass does with a row whose input and spec did not
// change since its state was recorded.
type rowFate int

const (
	rowResubmitted rowFate = iota // the row needs a new run
	rowSkipped                    // its final status stands
	rowReattached                 // its run in groupID is followed again
)

// keepState decides the fate of an unchanged row from its recorded state:
// completed rows are skipped, and failed, cancelled and invalid_output
// rows too unless retryFailed; a row waiting for a run of groupID is
// reattached to it; anything else needs a new run.
func keepState(prev rowState, groupID string, retryFailed bool) rowFate {
	switch prev.Status {
	case string(api.StatusCompleted):
		return rowSkipped
	case string(api.StatusFailed), string(api.StatusCancelled), StatusInvalidOutput:
		if retryFailed {
			return rowResubmitted
		}
		return rowSkipped
	case stateSubmitted:
		if prev.GroupID != groupID || prev.RunID == "" {
			return rowResubmitted // the run lives in a group this target does not have
		}
		return rowReattached
	}
	return rowResubmitted
}

// duplicate reports a row whose key an earlier row of this pass had.
func (s *submitter) duplicate(m mappedRow) {
	n := s.counts.duplicates.Add(1)
	if n <= 10 {
		s.log.Warn("duplicate key: row not submitted, the first row with this key was",
			"key", m.Key)
	} else if n == 11 {
		s.log.Warn("more duplicate keys; see the summary for the count")
	}
}

// nullKey reports a source row (numbered from 1) whose key has a NULL.
func (s *submitter) nullKey(row int64, m mappedRow) {
	n := s.counts.nullKeys.Add(1)
	if n <= 10 {
		s.log.Warn("row has a NULL key: written as invalid_input, not submitted",
			"row", row, "reason", m.Invalid)
	} else if n == 11 {
		s.log.Warn("more rows with a NULL key; see the invalid_input count")
	}
}

// runInput is the run of one mapped row.
func (s *submitter) runInput(m mappedRow) api.TaskRunInput {
	md := api.Metadata{}
	for k, v := range s.opts.Metadata {
		md[k] = v
	}
	for k, v := range runMetadata(m.Key, m.Fingerprint, s.specHash) {
		md[k] = v
	}
	return api.TaskRunInput{Input: m.Input, Processor: s.opts.Processor, Metadata: md}
}

// flush hands what is left in the chunk to the adder.
func (s *submitter) flush(ctx context.Context) error {
	for len(s.chunk) > 0 {
		if err := s.emit(ctx, min(len(s.chunk), s.opts.ChunkSize)); err != nil {
			return err
		}
	}
	return nil
}

// emit hands the first n runs of the chunk to the adder; the rows are
// recorded as submitting already.
func (s *submitter) emit(ctx context.Context, n int) error {
	job := addJob{inputs: s.chunk[:n:n], rows: s.chunkRows[:n:n]}
	s.chunk = slices.Clone(s.chunk[n:])
	s.chunkRows = slices.Clone(s.chunkRows[n:])
	select {
	case s.adds <- job:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// addAll adds the chunks it is handed, in order, until they end.
func (s *submitter) addAll(ctx context.Context) error {
	for {
		select {
		case job, ok := <-s.adds:
			if !ok {
				return nil
			}
			if err := s.addChunk(ctx, job); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// addChunk adds one chunk in the crash-safe order: the rows were recorded
// as submitting when they were read; add the runs; record their run ids.
// A crash between the last two steps is repaired by reconcile. While the
// call is in flight the follower waits on addDone for a finished run it
// cannot find yet.
func (s *submitter) addChunk(ctx context.Context, job addJob) error {
	n := len(job.inputs)
	s.mu.Lock()
	done := make(chan struct{})
	s.addDone = done
	s.mu.Unlock()
	resp, err := s.add(ctx, job.inputs)

	s.mu.Lock()
	defer func() {
		s.addDone = nil
		close(done)
		s.mu.Unlock()
	}()
	if err != nil {
		return fmt.Errorf("add %d runs to group %s: %w", n, s.groupID, err)
	}
	if len(resp.RunIDs) != n {
		return fmt.Errorf("add %d runs to group %s: got %d run ids", n, s.groupID, len(resp.RunIDs))
	}
	if err := s.state.setSubmitted(ctx, job.rows, resp.RunIDs); err != nil {
		return err
	}
	s.counts.submitted.Add(int64(n))
	s.outstanding.Add(int64(n))
	s.notifyAdded()
	return nil
}

// add waits for the rate limit and adds inputs to the group.
func (s *submitter) add(ctx context.Context, inputs []api.TaskRunInput) (api.TaskGroupRunResponse, error) {
	if err := s.limiter.Wait(ctx); err != nil {
		return api.TaskGroupRunResponse{}, fmt.Errorf("wait for the rate limit: %w", err)
	}
	return s.opts.Groups.AddRuns(ctx, s.groupID, api.TaskGroupRunRequest{
		Inputs: inputs, DefaultTaskSpec: &s.opts.TaskSpec,
	})
}
