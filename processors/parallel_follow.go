package processors

import (
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/engine"
)

// This file follows the upstream groups of the parallel kind: one events
// stream per group tells which runs finished, and the group's runs stream,
// read from a cursor in batches, gives their outputs.

// signalKind says why a pending run should be looked up in the runs
// stream.
type signalKind int

const (
	// sigTerminal: the events stream said the run finished.
	sigTerminal signalKind = iota + 1
	// sigCheck: its status is unknown (re-attached after a restart, or the
	// group went inactive); a snapshot showing it active settles it.
	sigCheck
)

// upstreamGroup is what the processor knows of one upstream group.
type upstreamGroup struct {
	id string
	// addMu serialises add-runs calls and their registration, so batches
	// are registered in the order the upstream stored them.
	addMu sync.Mutex

	mu sync.Mutex
	// pending are the runs whose jobs wait for completion, by upstream
	// run id.
	pending map[string]*pendingRun
	// signalled are pending runs the next read should resolve.
	signalled map[string]signalKind
	// early remembers runs reported finished before they were registered
	// (their add call had not returned yet), bounded by parallelEarlyCap.
	early map[string]struct{}
	// batches are the add calls with pending runs, in upstream order;
	// reattached holds runs taken over after a restart (order unknown,
	// read from the start of the stream).
	batches    []*runBatch
	reattached *runBatch
	// tail is the runs cursor before the newest batch: where runs of an
	// add whose reply was lost would be.
	tail string
	// lastEvent is the events stream cursor.
	lastEvent string
	following bool
	reading   bool
	readC     chan struct{}
}

// pendingRun is a registered upstream run and the job it executes.
type pendingRun struct {
	fj    *forwardJob
	batch *runBatch
	index int // position in batch.runs; -1 in the reattached batch
}

// runBatch is one add call's runs. cursor is the runs stream position
// before the first of its runs not yet done, and moves forward as reads
// complete them in order.
type runBatch struct {
	cursor    string
	runs      []string
	eventIDs  []string
	done      []bool
	next      int
	open      int
	signalled int
}

func newUpstreamGroup(id string) *upstreamGroup {
	return &upstreamGroup{
		id:        id,
		pending:   map[string]*pendingRun{},
		signalled: map[string]signalKind{},
		early:     map[string]struct{}{},
		readC:     make(chan struct{}, 1),
	}
}

// register records the runs of a successful add call; mu is held.
func (ug *upstreamGroup) register(jobs []*forwardJob, resp api.TaskGroupRunResponse) {
	b := &runBatch{
		runs:     resp.RunIDs,
		eventIDs: make([]string, len(resp.RunIDs)),
		done:     make([]bool, len(resp.RunIDs)),
		open:     len(resp.RunIDs),
	}
	if resp.RunCursor != nil {
		b.cursor = *resp.RunCursor
	}
	ug.tail = b.cursor
	ug.batches = append(ug.batches, b)
	for i, id := range resp.RunIDs {
		ug.pending[id] = &pendingRun{fj: jobs[i], batch: b, index: i}
		if _, ok := ug.early[id]; ok {
			delete(ug.early, id)
			ug.signal(id, sigTerminal)
		}
	}
}

// reattach registers a job's known upstream run; mu is held. Its status is
// unknown, so it is checked on the next read.
func (ug *upstreamGroup) reattach(fj *forwardJob, runID string) {
	if pr, ok := ug.pending[runID]; ok {
		pr.fj = fj // the engine retried the job: complete the new attempt
		return
	}
	if ug.reattached == nil {
		ug.reattached = &runBatch{}
	}
	ug.reattached.open++
	ug.pending[runID] = &pendingRun{fj: fj, batch: ug.reattached, index: -1}
	kind := sigCheck
	if _, ok := ug.early[runID]; ok {
		delete(ug.early, runID)
		kind = sigTerminal
	}
	ug.signal(runID, kind)
}

// signal marks a run for the next read; mu is held.
func (ug *upstreamGroup) signal(runID string, kind signalKind) {
	pr, ok := ug.pending[runID]
	if !ok {
		if kind == sigTerminal {
			if len(ug.early) >= parallelEarlyCap {
				clear(ug.early)
			}
			ug.early[runID] = struct{}{}
		}
		return
	}
	if old, ok := ug.signalled[runID]; ok {
		if old == sigCheck && kind == sigTerminal {
			ug.signalled[runID] = sigTerminal
		}
		return
	}
	ug.signalled[runID] = kind
	pr.batch.signalled++
}

// unsignal drops a run's mark; mu is held.
func (ug *upstreamGroup) unsignal(runID string) {
	if _, ok := ug.signalled[runID]; !ok {
		return
	}
	delete(ug.signalled, runID)
	ug.pending[runID].batch.signalled--
}

// resolve removes a finished run and returns its job; mu is held.
func (ug *upstreamGroup) resolve(runID string) *forwardJob {
	ug.unsignal(runID)
	pr := ug.pending[runID]
	delete(ug.pending, runID)
	b := pr.batch
	b.open--
	if pr.index >= 0 {
		b.done[pr.index] = true
		for b.next < len(b.runs) && b.done[b.next] && b.eventIDs[b.next] != "" {
			b.cursor = b.eventIDs[b.next]
			b.next++
		}
	}
	if b.open == 0 {
		if b == ug.reattached {
			ug.reattached = nil
		} else if i := slices.Index(ug.batches, b); i >= 0 {
			ug.batches = slices.Delete(ug.batches, i, i+1)
		}
	}
	return pr.fj
}

// readFrom is the cursor a read starts at: before the earliest batch with
// a signalled run; mu is held.
func (ug *upstreamGroup) readFrom() string {
	if ug.reattached != nil && ug.reattached.signalled > 0 {
		return ""
	}
	for _, b := range ug.batches {
		if b.signalled > 0 {
			return b.cursor
		}
	}
	return ""
}

// observe applies one event of the runs stream and returns the job it
// finishes (nil if none); mu is held.
func (ug *upstreamGroup) observe(ev *api.TaskRunEvent) *forwardJob {
	id := ev.Run.RunID
	pr, ok := ug.pending[id]
	if !ok {
		return nil
	}
	if pr.index >= 0 && ev.EventID != nil {
		pr.batch.eventIDs[pr.index] = *ev.EventID
	}
	if ev.Run.Status.Terminal() {
		return ug.resolve(id)
	}
	if ug.signalled[id] == sigCheck {
		ug.unsignal(id) // active now: its completion will be reported
	}
	return nil
}

// followLocked starts the group's events follower and reader when runs
// are pending and they are not running; ug.mu is held.
func (p *Parallel) followLocked(ug *upstreamGroup) {
	if len(ug.pending) > 0 && !ug.following {
		ug.following = p.goStart(func() { p.follow(ug) })
	}
	if len(ug.signalled) > 0 {
		p.wakeReaderLocked(ug)
	}
}

// wakeReaderLocked starts the reader if needed and asks it to read;
// ug.mu is held.
func (p *Parallel) wakeReaderLocked(ug *upstreamGroup) {
	if !ug.reading {
		ug.reading = p.goStart(func() { p.readLoop(ug) })
	}
	select {
	case ug.readC <- struct{}{}:
	default:
	}
}

// follow reads the group's events stream while runs are pending; the
// client resumes a dropped stream from the last event id. When the stream
// ends (the group went inactive, or its hour passed) every pending run is
// checked by a read, and the reader reopens the stream if runs are still
// active then.
func (p *Parallel) follow(ug *upstreamGroup) {
	for failures := 0; ; failures++ {
		ug.mu.Lock()
		from := ug.lastEvent
		ug.mu.Unlock()
		err := p.client.GroupEvents(p.ctx, ug.id, api.GroupEventsQuery{LastEventID: from},
			func(ev api.Event) error {
				ug.mu.Lock()
				defer ug.mu.Unlock()
				switch e := ev.(type) {
				case *api.TaskRunEvent:
					if e.EventID != nil {
						ug.lastEvent = *e.EventID
					}
					if e.Run.Status.Terminal() {
						ug.signal(e.Run.RunID, sigTerminal)
					}
				case *api.TaskGroupStatusEvent:
					ug.lastEvent = e.EventID
				}
				if len(ug.signalled) > 0 {
					p.wakeReaderLocked(ug)
				}
				return nil
			})
		if p.ctx.Err() != nil {
			return
		}

		// A clean end hands over to the reader; a refusal fails the
		// pending jobs; other errors reopen after a pause.
		ug.mu.Lock()
		var lost []*forwardJob
		switch {
		case err == nil || len(ug.pending) == 0:
			for id := range ug.pending {
				ug.signal(id, sigCheck)
			}
			if len(ug.signalled) > 0 {
				p.wakeReaderLocked(ug)
			}
			ug.following = false
		case definitive(err):
			for id := range ug.pending {
				lost = append(lost, ug.resolve(id))
			}
			ug.following = false
			p.wakeReaderLocked(ug) // so that it sees nothing pending and exits
		}
		following := ug.following
		ug.mu.Unlock()
		if !following {
			p.failJobs(lost, err)
			return
		}
		p.log.Warn("follow upstream group events", "group", ug.id, "attempt", failures+1, "error", err)
		if !sleepCtx(p.ctx, backoff(time.Second, failures)) {
			return
		}
	}
}

// readLoop reads outputs whenever runs are signalled, gathering signals for
// FlushInterval first so that one read serves many completions. Once no
// signal is left, runs still pending are active upstream, and the loop
// reopens the events stream for them if it had ended.
func (p *Parallel) readLoop(ug *upstreamGroup) {
	stalls := 0
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-ug.readC:
		}
		if !sleepCtx(p.ctx, p.opts.FlushInterval) {
			return
		}
		resolved, err := p.read(ug)
		if p.ctx.Err() != nil {
			return
		}
		if err != nil {
			p.log.Warn("read upstream runs", "group", ug.id, "error", err)
		}

		// Exit when idle; read again (backing off if stuck) when signals
		// remain.
		ug.mu.Lock()
		if len(ug.signalled) == 0 {
			if len(ug.pending) == 0 {
				ug.reading = false
				ug.mu.Unlock()
				return
			}
			// What is left is active upstream: make sure it is followed.
			if !ug.following {
				ug.following = p.goStart(func() { p.follow(ug) })
			}
			ug.mu.Unlock()
			continue
		}
		ug.mu.Unlock()
		if resolved > 0 {
			stalls = 0
		} else {
			if !sleepCtx(p.ctx, backoff(p.opts.FlushInterval, stalls)) {
				return
			}
			stalls++
		}
		select {
		case ug.readC <- struct{}{}:
		default:
		}
	}
}

// read streams the group's runs with outputs from the earliest signalled
// batch and completes the jobs of finished runs, stopping as soon as no
// signal is left. It returns how many runs it resolved.
func (p *Parallel) read(ug *upstreamGroup) (int, error) {
	ug.mu.Lock()
	if len(ug.signalled) == 0 {
		ug.mu.Unlock()
		return 0, nil
	}
	from := ug.readFrom()
	checks := map[string]bool{}
	for id, kind := range ug.signalled {
		if kind == sigCheck {
			checks[id] = true
		}
	}
	ug.mu.Unlock()

	resolved := 0
	err := p.client.GroupRuns(p.ctx, ug.id, api.GroupRunsQuery{LastEventID: from, IncludeOutput: true},
		func(ev *api.TaskRunEvent) error {
			delete(checks, ev.Run.RunID)
			ug.mu.Lock()
			fj := ug.observe(ev)
			left := len(ug.signalled)
			ug.mu.Unlock()
			if fj != nil {
				resolved++
				fj.r.Complete(fj.job.RunID, runOutcome(ug.id, ev))
			}
			if left == 0 {
				return errReadDone
			}
			return nil
		})
	if err != nil && !errors.Is(err, errReadDone) {
		return resolved, err
	}
	if err != nil || from != "" {
		return resolved, nil
	}

	// A full read did not show some checked runs at all: the upstream
	// lost them. Forget the run and let the engine retry the job afresh.
	var lost []*forwardJob
	ug.mu.Lock()
	for id := range checks {
		if ug.signalled[id] == sigCheck {
			lost = append(lost, ug.resolve(id))
		}
	}
	ug.mu.Unlock()
	for _, fj := range lost {
		if err := fj.r.Checkpoint(p.ctx, fj.job.RunID, nil); err != nil {
			p.log.Warn("clear checkpoint", "run_id", fj.job.RunID, "error", err)
		}
		fj.r.Complete(fj.job.RunID, engine.Outcome{Err: engine.Transient(
			errors.New("upstream run not found in its group; submitting again"), 0)})
	}
	return resolved + len(lost), nil
}
