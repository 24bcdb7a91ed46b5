package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/sinks"
)

// errLimitReached stops the source read at --limit.
var errLimitReached = errors.New("limit reached")

// submitter reads the source, decides what each row needs and adds runs in
// chunks within the rate limit.
type submitter struct {
	*runner
	chunk     []api.TaskRunInput
	chunkRows []rowState
	// batchKeys catches a key repeated inside one source batch.
	batchKeys map[string]bool
}

// submitAll reads every source row (up to the limit) and submits the rows
// that need a run. It returns when the last chunk is added.
func (r *runner) submitAll(ctx context.Context) error {
	s := &submitter{runner: r}
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
		if err := s.batch(ctx, rows); err != nil {
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
	return s.flush(ctx)
}

// batch maps one source batch and acts on every row.
func (s *submitter) batch(ctx context.Context, rows [][]any) error {
	// Map every row first; look the keys up in one query.
	mapped := make([]mappedRow, len(rows))
	keys := make([]string, 0, len(rows))
	for i, row := range rows {
		mapped[i] = s.mapper.mapRow(row)
		keys = append(keys, mapped[i].Key)
	}
	s.counts.read.Add(int64(len(rows)))

	// Decide under the lock the follower settles rows with, so a row is
	// never counted as outstanding after its result was written.
	s.mu.Lock()
	defer s.mu.Unlock()
	states, err := s.state.rows(ctx, keys)
	if err != nil {
		return err
	}
	s.batchKeys = make(map[string]bool, len(rows))
	var (
		put     []rowState
		invalid []mappedRow
	)
	for _, m := range mapped {
		prev, seen := states[m.Key]
		if (seen && prev.Pass == s.pass) || s.batchKeys[m.Key] {
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
	if err := s.state.putRows(ctx, put); err != nil {
		return err
	}
	for len(s.chunk) >= s.opts.ChunkSize {
		if err := s.addChunk(ctx, s.opts.ChunkSize); err != nil {
			return err
		}
	}
	return nil
}

// keep decides, for a row whose input and spec did not change, whether its
// current state stands (true) or it needs a new run (false); it counts the
// rows it keeps.
func (s *submitter) keep(prev rowState) bool {
	switch prev.Status {
	case string(api.StatusCompleted):
		s.counts.skipped.Add(1)
		return true
	case string(api.StatusFailed), string(api.StatusCancelled), StatusInvalidOutput:
		if s.opts.RetryFailed {
			return false
		}
		s.counts.skipped.Add(1)
		return true
	case stateSubmitted:
		if prev.GroupID != s.groupID || prev.RunID == "" {
			return false // the run lives in a group this target does not have
		}
		s.counts.reattached.Add(1)
		s.outstanding.Add(1)
		return true
	}
	return false
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

// flush adds what is left in the chunk.
func (s *submitter) flush(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.chunk) > 0 {
		if err := s.addChunk(ctx, min(len(s.chunk), s.opts.ChunkSize)); err != nil {
			return err
		}
	}
	return nil
}

// addChunk adds the first n runs of the chunk, in the crash-safe order:
// the rows were recorded as submitting when they were read; add the runs;
// record their run ids. A crash between the last two steps is repaired by
// reconcile. The caller holds s.mu; it is let go while the runs are added,
// and the follower waits on addDone for a finished run it cannot find yet.
func (s *submitter) addChunk(ctx context.Context, n int) (err error) {
	inputs, rows := s.chunk[:n], s.chunkRows[:n]
	done := make(chan struct{})
	s.addDone = done
	defer func() {
		s.addDone = nil
		close(done)
	}()
	s.mu.Unlock()
	resp, err := s.add(ctx, inputs)
	s.mu.Lock()
	if err != nil {
		return fmt.Errorf("add %d runs to group %s: %w", n, s.groupID, err)
	}
	if len(resp.RunIDs) != n {
		return fmt.Errorf("add %d runs to group %s: got %d run ids", n, s.groupID, len(resp.RunIDs))
	}
	if err := s.state.setSubmitted(ctx, rows, resp.RunIDs); err != nil {
		return err
	}
	s.counts.submitted.Add(int64(n))
	s.outstanding.Add(int64(n))
	// Fresh slices: the group API may keep the inputs it was given.
	s.chunk = slices.Clone(s.chunk[n:])
	s.chunkRows = slices.Clone(s.chunkRows[n:])
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
