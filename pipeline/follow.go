package pipeline

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"maps"
	"slices"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/sinks"
)

// writeBatch is the most finished runs written to the sinks at once.
const writeBatch = 8000

// errScanDone ends a runs scan early.
var errScanDone = errors.New("scan done")

// follower writes results as runs finish: it listens to the group's events
// stream for finished runs, then reads their outputs from the runs stream
// in batches and upserts them into the sinks.
//
// Two cursors keep every read bounded. The scan cursor is where the last
// scan of the runs stream stopped: each scan reads on from it, so a run is
// read once. A run a scan meets while it is still active waits, with the
// cursor before it; when its finish is reported it is read alone through
// the run API (or, when many wait close together, by one scan over them).
// The watermark, the recorded run cursor, is the cursor before the oldest
// waiting run: everything before it is written, so a restarted follower
// reads on from there, and one slow run never makes later scans read the
// runs after it again.
type follower struct {
	*runner
	// finished holds run ids reported finished and not yet written.
	finished map[string]bool
	// handled remembers the runs written lately, so that their events,
	// which often trail the scans, start no read.
	handled recentRuns
	// waiting holds the runs met active, by id, and order holds their ids
	// in the order met (written ones are dropped lazily from its front).
	waiting map[string]waitingRun
	order   []string
	// scanned counts the runs read by scans; scanCursor is the cursor
	// after the last one.
	scanned     int64
	scanCursor  string
	runCursor   string
	eventCursor string
	// w writes the rows the follower builds, in order, on its own
	// goroutine, so that reading the next runs overlaps writing the last.
	w *writer
}

// follow runs until every outstanding row of this pass is written (once the
// submitter is done), ctx ends or following fails for good.
func (r *runner) follow(ctx context.Context, submitted <-chan struct{}) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f := &follower{runner: r, finished: map[string]bool{}, handled: newRecentRuns(),
		waiting: map[string]waitingRun{}, scanCursor: r.group.RunCursor,
		runCursor: r.group.RunCursor, eventCursor: r.group.EventCursor}
	f.w = startWriter(ctx, r)
	defer f.w.stop()

	// Catch up with whatever finished while no one was following.
	if err := f.scan(ctx, true); err != nil {
		return err
	}
	failures := 0
	for {
		if isClosed(submitted) && r.outstanding.Load() <= 0 {
			return f.w.sync(ctx)
		}

		// Follow one events stream connection to its end.
		err := f.stream(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			failures++
			if failures > maxStreamFailures {
				return fmt.Errorf("follow group %s: %w", r.groupID, err)
			}
			wait := min(time.Duration(failures)*500*time.Millisecond, 10*time.Second)
			r.log.Warn("group events stream dropped; resuming", "group_id", r.groupID,
				"after", wait, "error", err)
			if !sleep(ctx, wait) {
				return ctx.Err()
			}
			continue
		}
		failures = 0

		// The stream ended: the group is inactive (or the stream's time
		// limit passed). Note whether submission had finished before
		// looking, so that the scan below is known to cover every run,
		// then write anything the stream did not report.
		allAdded := isClosed(submitted)
		g, err := r.opts.Groups.GetTaskGroup(ctx, r.groupID)
		if err != nil {
			return fmt.Errorf("get group %s: %w", r.groupID, err)
		}
		if err := f.scan(ctx, true); err != nil {
			return err
		}
		if g.Status.IsActive {
			continue
		}
		if allAdded {
			// Every run is read; once the writes land, rows still waiting
			// have runs the group lost.
			if err := f.w.sync(ctx); err != nil {
				return err
			}
			if n := r.outstanding.Load(); n > 0 {
				return f.settleLost(ctx)
			}
			return nil
		}
		// More runs are coming: wait for the next chunk before listening.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.added:
		case <-submitted:
		case <-time.After(time.Second):
		}
	}
}

// maxStreamFailures is how many consecutive failed connections to the
// events stream end the pipeline with an error.
const maxStreamFailures = 8

// stream reads the events stream once, collecting finished runs and
// writing them every FlushInterval or 1,000 runs.
func (f *follower) stream(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := make(chan api.Event, 4096)
	streamErr := make(chan error, 1)
	go func() {
		defer close(events)
		streamErr <- f.opts.Groups.GroupEvents(ctx, f.groupID,
			api.GroupEventsQuery{LastEventID: f.eventCursor},
			func(ev api.Event) error {
				select {
				case events <- ev:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
	}()

	tick := time.NewTicker(f.opts.FlushInterval)
	defer tick.Stop()
	cursor := f.eventCursor
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				// The stream ended; write what it reported.
				if err := f.flush(ctx, cursor); err != nil {
					return err
				}
				return <-streamErr
			}
			cursor = f.collect(ev, cursor)
			if len(f.finished) >= DefaultChunkSize {
				if err := f.flush(ctx, cursor); err != nil {
					return err
				}
			}
		case <-tick.C:
			if err := f.flush(ctx, cursor); err != nil {
				return err
			}
			if f.done() {
				return nil
			}
		}
	}
}

// done reports whether every row of this pass is written and no more runs
// will be added.
func (f *follower) done() bool {
	return isClosed(f.submitted) && f.outstanding.Load() <= 0
}

// collect notes one event and returns the new events cursor.
func (f *follower) collect(ev api.Event, cursor string) string {
	switch e := ev.(type) {
	case *api.TaskRunEvent:
		if e.Run.Status.Terminal() {
			f.finished[e.Run.RunID] = true
		}
		if e.EventID != nil {
			cursor = *e.EventID
		}
	case *api.TaskGroupStatusEvent:
		cursor = e.EventID
	case *api.ErrorEvent:
		f.log.Warn("group events stream reported an error", "group_id", f.groupID,
			"error", e.Error.Message)
	}
	return cursor
}

// flush writes the finished runs collected so far and records the events
// cursor up to which every event is handled.
func (f *follower) flush(ctx context.Context, cursor string) error {
	// Events often trail the scans: drop runs already written, so that a
	// scan does not look for them. A run written long ago that is still
	// reported only makes one scan read to the end of the group.
	for id := range f.finished {
		if f.handled.has(id) {
			delete(f.finished, id)
		}
	}
	if len(f.finished) > 0 {
		if err := f.scan(ctx, false); err != nil {
			return err
		}
	}
	if cursor != f.eventCursor {
		f.eventCursor = cursor
		return f.w.send(ctx, writeJob{cursors: true, runCursor: f.runCursor, eventCursor: f.eventCursor})
	}
	return nil
}

// waitingRun is a run a scan met while it was active.
type waitingRun struct {
	before string // the runs cursor just before it
	at     int64  // its position among the runs scanned
}

// maxFetchShare bounds reading finished runs one at a time: when more
// waiting runs finished than one per maxFetchShare runs scanned since the
// oldest waiting one, a scan from the watermark reads them all at once.
const maxFetchShare = 20

// scan reads the runs stream with outputs and writes every finished run it
// meets. A full scan starts over from the watermark and reads to the end of
// the group; otherwise it reads on from the scan cursor and stops once it
// has met every finished run reported beyond it. Then the finished runs it
// met active before are read, and the watermark moves.
func (f *follower) scan(ctx context.Context, full bool) error {
	if full {
		if err := f.scanFrom(ctx, f.runCursor, true); err != nil {
			return err
		}
	} else if f.ahead() > 0 {
		if err := f.scanFrom(ctx, f.scanCursor, false); err != nil {
			return err
		}
	}
	if err := f.readWaiting(ctx); err != nil {
		return err
	}
	// Runs reported finished but not met were written before.
	clear(f.finished)
	return f.advance(ctx)
}

// ahead counts the finished runs reported that no scan met yet.
func (f *follower) ahead() int {
	n := 0
	for id := range f.finished {
		if _, ok := f.waiting[id]; !ok {
			n++
		}
	}
	return n
}

// scanFrom reads the runs stream after cursor. From the watermark it reads
// runs scanned before again: those written lately are skipped, and the
// state store ignores the others (their rows are settled).
func (f *follower) scanFrom(ctx context.Context, cursor string, toEnd bool) error {
	// A scan from behind the scan cursor finds the waiting runs again, and
	// goes on at least to the scan cursor, so that none is forgotten.
	old := f.scanCursor
	pastOld := cursor == old
	if !pastOld {
		f.scanned = 0
		clear(f.waiting)
		f.order = f.order[:0]
	}
	ahead := f.ahead()
	var buf []*api.TaskRunEvent
	err := f.opts.Groups.GroupRuns(ctx, f.groupID,
		api.GroupRunsQuery{LastEventID: cursor, IncludeOutput: true},
		func(ev *api.TaskRunEvent) error {
			id := ev.Run.RunID
			terminal := ev.Run.Status.Terminal()
			if f.finished[id] {
				ahead--
				if terminal {
					delete(f.finished, id)
				}
			}
			switch {
			case terminal:
				if !f.handled.has(id) {
					buf = append(buf, ev)
				}
			default:
				if _, ok := f.waiting[id]; !ok {
					f.waiting[id] = waitingRun{before: cursor, at: f.scanned}
					f.order = append(f.order, id)
				}
			}
			f.scanned++
			if ev.EventID != nil {
				cursor = *ev.EventID
			}
			pastOld = pastOld || cursor == old
			if len(buf) >= writeBatch {
				if err := f.write(ctx, buf); err != nil {
					return err
				}
				buf = buf[:0]
			}
			if !toEnd && pastOld && ahead <= 0 {
				return errScanDone
			}
			return nil
		})
	if err != nil && !errors.Is(err, errScanDone) {
		return fmt.Errorf("read runs of group %s: %w", f.groupID, err)
	}
	f.scanCursor = cursor
	return f.write(ctx, buf)
}

// readWaiting reads the reported finished runs that scans met active: one
// at a time through the run API while they are few against the runs
// scanned since the oldest waiting one, else by one scan from the
// watermark.
func (f *follower) readWaiting(ctx context.Context) error {
	var ids []string
	for id := range f.finished {
		if _, ok := f.waiting[id]; ok {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	f.trimOrder()
	span := f.scanned - f.waiting[f.order[0]].at
	if f.opts.Runs == nil || int64(len(ids))*maxFetchShare > span {
		return f.scanFrom(ctx, f.runCursor, false)
	}
	evs := make([]*api.TaskRunEvent, 0, len(ids))
	for _, id := range ids {
		ev, err := f.fetchRun(ctx, id)
		if err != nil {
			return err
		}
		if ev != nil {
			evs = append(evs, ev)
		}
	}
	return f.write(ctx, evs)
}

// fetchRun reads one finished run and its output through the run API; nil
// while the run is still active (a later full scan finds it).
func (f *follower) fetchRun(ctx context.Context, id string) (*api.TaskRunEvent, error) {
	res, err := f.opts.Runs.GetRunResult(ctx, id, time.Second)
	switch {
	case err == nil:
		return &api.TaskRunEvent{Type: api.EventRunState, Run: res.Run, Output: &res.Output}, nil
	case errors.Is(err, api.ErrTimeout):
		return nil, nil
	case !errors.Is(err, api.ErrNotFound):
		return nil, fmt.Errorf("read run %s: %w", id, err)
	}
	// Failed and cancelled runs have no result: read their status.
	run, err := f.opts.Runs.GetRun(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("read run %s: %w", id, err)
	}
	if !run.Status.Terminal() {
		return nil, nil
	}
	return &api.TaskRunEvent{Type: api.EventRunState, Run: run}, nil
}

// trimOrder drops written runs from the front of order.
func (f *follower) trimOrder() {
	n := 0
	for n < len(f.order) {
		if _, ok := f.waiting[f.order[n]]; ok {
			break
		}
		n++
	}
	f.order = f.order[n:]
	if cap(f.order) > 1024 && len(f.order) < cap(f.order)/4 {
		f.order = slices.Clone(f.order)
	}
}

// advance moves the watermark to just before the oldest waiting run (to
// the scan cursor when none waits) and records it after the writes sent.
func (f *follower) advance(ctx context.Context) error {
	f.trimOrder()
	watermark := f.scanCursor
	if len(f.order) > 0 {
		watermark = f.waiting[f.order[0]].before
	}
	if watermark == f.runCursor {
		return nil
	}
	f.runCursor = watermark
	return f.w.send(ctx, writeJob{cursors: true, runCursor: f.runCursor, eventCursor: f.eventCursor})
}

// write turns finished runs into rows and hands them to the writer, which
// upserts them into the sinks and then settles their state.
func (f *follower) write(ctx context.Context, evs []*api.TaskRunEvent) error {
	if len(evs) == 0 {
		return nil
	}
	ids := make([]string, len(evs))
	for i, ev := range evs {
		ids[i] = ev.Run.RunID
	}
	states, err := f.lookup(ctx, ids)
	if err != nil {
		return err
	}

	// Only runs that still serve a row waiting for them become rows.
	job := writeJob{rows: make([]sinks.Row, 0, len(evs)), settle: make(map[string]string, len(evs))}
	for _, ev := range evs {
		id := ev.Run.RunID
		f.handled.add(id)
		delete(f.waiting, id)
		s, ok := states[id]
		if !ok || s.Status != stateSubmitted {
			continue
		}
		row, status, err := f.builder.runRow(s, ev)
		if err != nil {
			return fmt.Errorf("build row of run %s: %w", id, err)
		}
		job.rows = append(job.rows, row)
		job.settle[id] = status
	}
	return f.w.send(ctx, job)
}

// lookup returns the rows served by the runs ids, by run id. A run that
// finished before the add-runs call that made it returned has no row yet:
// when some are missing while a call is in flight, it waits for the call's
// run ids to be recorded and looks them up again.
func (f *follower) lookup(ctx context.Context, ids []string) (map[string]rowState, error) {
	f.mu.Lock()
	states, err := f.state.byRunIDs(ctx, ids)
	adding := f.addDone
	f.mu.Unlock()
	if err != nil || adding == nil || len(states) == len(ids) {
		return states, err
	}
	select {
	case <-adding:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var missing []string
	for _, id := range ids {
		if _, ok := states[id]; !ok {
			missing = append(missing, id)
		}
	}
	f.mu.Lock()
	more, err := f.state.byRunIDs(ctx, missing)
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	maps.Copy(states, more)
	return states, nil
}

// settleLost fails the rows whose runs the inactive group does not have
// (its server lost them), so that none is left waiting forever.
func (f *follower) settleLost(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	lost, err := f.state.lost(ctx, f.pass, f.groupID)
	if err != nil {
		return err
	}
	rows := make([]sinks.Row, 0, len(lost))
	settle := map[string]string{}
	for _, s := range lost {
		msg := fmt.Sprintf("run %s is not in group %s any more", s.RunID, f.groupID)
		ev := &api.TaskRunEvent{Run: api.TaskRun{RunID: s.RunID, Status: api.StatusFailed,
			Error: &api.ErrorObject{Message: msg}}}
		row, _, err := f.builder.runRow(s, ev)
		if err != nil {
			return err
		}
		rows = append(rows, row)
		settle[s.RunID] = string(api.StatusFailed)
		f.log.Error("run lost", "key", s.Key, "run_id", s.RunID, "group_id", f.groupID)
	}
	if err := f.writeSinks(ctx, rows); err != nil {
		return err
	}
	inPass, err := f.state.settle(ctx, settle, f.pass)
	if err != nil {
		return err
	}
	f.countSettled(inPass)
	return nil
}

// recentRuns is a bounded set of run ids, kept as 64-bit hashes in two
// generations of at most recentRunsGen each: the older generation is
// dropped when the newer one fills.
type recentRuns struct {
	seed      maphash.Seed
	cur, prev map[uint64]struct{}
}

// recentRunsGen is the size of one generation of recentRuns.
const recentRunsGen = 50_000

func newRecentRuns() recentRuns {
	return recentRuns{seed: maphash.MakeSeed(), cur: map[uint64]struct{}{}}
}

func (r *recentRuns) add(id string) {
	if len(r.cur) >= recentRunsGen {
		r.prev, r.cur = r.cur, make(map[uint64]struct{}, recentRunsGen)
	}
	r.cur[maphash.String(r.seed, id)] = struct{}{}
}

func (r *recentRuns) has(id string) bool {
	h := maphash.String(r.seed, id)
	if _, ok := r.cur[h]; ok {
		return true
	}
	_, ok := r.prev[h]
	return ok
}

// isClosed reports whether ch is closed.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
