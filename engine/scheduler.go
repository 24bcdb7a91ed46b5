package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"runtime/debug"
	"sync"
	"time"

	gojson "github.com/goccy/go-json"
	"golang.org/x/time/rate"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/store"
)

// Scheduling constants.
const (
	maxClaim = 1000
	// leaseGrace is how long past a run's deadline its lease lasts, so
	// that the deadline, not the lease, ends a slow attempt.
	leaseGrace = time.Minute
)

// dispatcher feeds one processor backend: it claims queued runs while the
// backend has free concurrency and rate, hands them to the processor and
// enforces each job's deadline.
type dispatcher struct {
	e       *Engine
	name    string
	backend Backend
	limiter *rate.Limiter

	wakeC chan struct{}
	// stopC closes when claiming stops; idle closes when nothing is in
	// flight after that.
	stopC    chan struct{}
	stopOnce sync.Once

	// ctx is the engine's work context, set by start.
	ctx context.Context

	mu       sync.Mutex
	inflight map[string]*job
	reserved int           // slots promised to runs being claimed at insert
	freed    chan struct{} // signalled when a slot frees
	idle     chan struct{} // closed when stopping and inflight is empty
}

// job is a run this node is executing.
type job struct {
	run      store.Run
	spec     *specInfo
	started  time.Time
	timer    *time.Timer
	canceled bool
}

func newDispatcher(e *Engine, name string, b Backend) *dispatcher {
	d := &dispatcher{
		e:        e,
		name:     name,
		backend:  b,
		wakeC:    make(chan struct{}, 1),
		stopC:    make(chan struct{}),
		inflight: make(map[string]*job),
		freed:    make(chan struct{}, 1),
		idle:     make(chan struct{}),
	}
	if b.RatePerMinute > 0 {
		perSecond := b.RatePerMinute / 60
		burst := int(math.Max(1, math.Ceil(perSecond)))
		d.limiter = rate.NewLimiter(rate.Limit(perSecond), burst)
	}
	return d
}

// wake asks the dispatcher to look for claimable runs now.
func (d *dispatcher) wake() {
	select {
	case d.wakeC <- struct{}{}:
	default:
	}
}

func (d *dispatcher) start(ctx context.Context, wg *sync.WaitGroup) {
	d.ctx = ctx
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.loop(ctx)
	}()
}

// loop claims and dispatches until claiming stops.
func (d *dispatcher) loop(ctx context.Context) {
	poll := time.NewTicker(d.e.poll)
	defer poll.Stop()
	for {
		// Wait for a free slot.
		free := d.free()
		for free == 0 {
			select {
			case <-d.stopC:
				return
			case <-d.freed:
			}
			free = d.free()
		}

		// Respect the rate limit before claiming.
		n := min(free, maxClaim)
		if d.limiter != nil {
			n = min(n, d.limiter.Burst())
			if err := d.limiter.WaitN(ctx, n); err != nil {
				return
			}
		}
		// Hold the slots while claiming, so that runs claimed at insert
		// meanwhile cannot take them too.
		n = d.hold(n)
		runs, err := d.claim(ctx, n)
		if err != nil {
			if ctx.Err() != nil {
				d.release(n)
				return
			}
			d.e.log.Error("claim runs", "processor", d.name, "error", err)
		}
		jobs := d.register(runs, n)
		if len(runs) > 0 {
			d.run(ctx, jobs)
			continue
		}

		// Nothing claimable: wait for new runs or the next poll.
		select {
		case <-d.stopC:
			return
		case <-d.wakeC:
		case <-poll.C:
		}
	}
}

// free is the number of runs the backend may still take.
func (d *dispatcher) free() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	select {
	case <-d.stopC:
		return 0
	default:
	}
	return max(0, d.backend.Concurrency-len(d.inflight)-d.reserved)
}

// hold reserves up to n free slots for a claim and returns how many.
func (d *dispatcher) hold(n int) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n = max(0, min(n, d.backend.Concurrency-len(d.inflight)-d.reserved))
	d.reserved += n
	return n
}

// reserve promises up to n free slots to runs about to be inserted already
// claimed, within the rate limit. The caller hands each back with
// dispatchClaimed or release.
func (d *dispatcher) reserve(n int) int {
	if d.ctx == nil {
		return 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	select {
	case <-d.stopC:
		return 0
	default:
	}
	n = min(n, d.backend.Concurrency-len(d.inflight)-d.reserved)
	if n <= 0 {
		return 0
	}
	if d.limiter != nil {
		n = min(n, d.limiter.Burst())
		if !d.limiter.AllowN(time.Now(), n) {
			return 0
		}
	}
	d.reserved += n
	return n
}

// release returns reserved slots unused.
func (d *dispatcher) release(n int) {
	if n == 0 {
		return
	}
	d.mu.Lock()
	d.reserved -= n
	d.mu.Unlock()
	d.signalFreed()
}

// signalFreed wakes a loop waiting for a free slot.
func (d *dispatcher) signalFreed() {
	select {
	case d.freed <- struct{}{}:
	default:
	}
}

// dispatchClaimed executes runs stored already claimed, in their reserved
// slots.
func (d *dispatcher) dispatchClaimed(runs []store.Run) {
	jobs := d.register(runs, len(runs))
	go d.run(d.ctx, jobs)
}

func (d *dispatcher) claim(ctx context.Context, n int) ([]store.Run, error) {
	now := d.e.now()
	return d.e.store.ClaimRuns(ctx, store.Claim{
		Processor:  d.name,
		Node:       d.e.node,
		Limit:      n,
		Now:        now,
		LeaseUntil: now.Add(d.backend.Timeout + leaseGrace),
	})
}

// register moves claimed runs into the in-flight set, in the same step
// giving back the reserved slots held for them, and returns their jobs. A
// stored run that cannot be decoded fails at once.
func (d *dispatcher) register(runs []store.Run, reserved int) []Job {
	now := d.e.now()
	jobs := make([]Job, 0, len(runs))
	entries := make([]*job, len(runs))
	var broken []string
	var brokenErr []error
	for i := range runs {
		r := runs[i]
		info := d.e.validator.stored(r.SpecHash, r.Spec)
		entries[i] = &job{run: r, spec: info, started: now}
		var in api.TaskRunInput
		err := info.err
		if err == nil {
			err = gojson.Unmarshal(r.Input, &in)
			spec := info.spec
			in.TaskSpec = &spec
		}
		if err != nil {
			broken, brokenErr = append(broken, r.ID), append(brokenErr, err)
			continue
		}
		jobs = append(jobs, Job{
			RunID:      r.ID,
			GroupID:    r.GroupID,
			Input:      in,
			SpecHash:   info.hash,
			Attempt:    r.Attempt,
			Checkpoint: r.Checkpoint,
			Deadline:   now.Add(d.backend.Timeout),
		})
	}

	// Count them in flight and start their deadlines.
	d.mu.Lock()
	d.reserved -= reserved
	for _, j := range entries {
		id := j.run.ID
		j.timer = time.AfterFunc(d.backend.Timeout, func() { d.timeout(id) })
		d.inflight[id] = j
	}
	d.mu.Unlock()
	if unused := reserved - len(runs); unused > 0 {
		d.signalFreed()
	}
	d.e.metrics.inflight.WithLabelValues(d.name).Add(float64(len(runs)))
	for i, id := range broken {
		d.e.recorder.complete(d, id, Outcome{Err: fmt.Errorf("read stored run: %w", brokenErr[i])})
	}
	return jobs
}

// run serves jobs from the result cache or hands them to the processor.
func (d *dispatcher) run(ctx context.Context, jobs []Job) {
	if jobs = d.fromCache(ctx, jobs); len(jobs) > 0 {
		d.execute(ctx, jobs)
	}
}

// execute hands jobs to the processor. A panic inside Execute fails the
// batch's runs that were not completed yet instead of the whole process.
func (d *dispatcher) execute(ctx context.Context, jobs []Job) {
	defer func() {
		p := recover()
		if p == nil {
			return
		}
		d.e.log.Error("processor panicked", "processor", d.name, "panic", fmt.Sprint(p),
			"stack", string(debug.Stack()))
		for _, j := range jobs {
			d.e.recorder.complete(d, j.RunID, Outcome{Err: fmt.Errorf("processor %s panicked: %v", d.name, p)})
		}
	}()
	d.backend.Processor.Execute(ctx, jobs, reporter{d})
}

// timeout fails a job that outlived its deadline.
func (d *dispatcher) timeout(runID string) {
	d.e.recorder.complete(d, runID, Outcome{
		Err: fmt.Errorf("run exceeded its timeout of %s", d.backend.Timeout),
	})
}

// take removes a job from the in-flight set; ok is false when it was
// already taken (completed twice, timed out, cancelled).
func (d *dispatcher) take(runID string) (*job, bool) {
	d.mu.Lock()
	j, ok := d.inflight[runID]
	if ok {
		delete(d.inflight, runID)
		if j.timer != nil {
			j.timer.Stop()
		}
	}
	empty := len(d.inflight) == 0
	d.mu.Unlock()
	if ok {
		d.e.metrics.inflight.WithLabelValues(d.name).Dec()
		d.signalFreed()
		if empty {
			d.checkIdle()
		}
	}
	return j, ok
}

// cancelJob finishes a cancelled run this node is executing.
func (d *dispatcher) cancelJob(runID string) {
	d.mu.Lock()
	_, ok := d.inflight[runID]
	d.mu.Unlock()
	if ok {
		d.e.recorder.complete(d, runID, Outcome{Err: errCancelled})
	}
}

// stopClaiming stops the loop from taking new runs.
func (d *dispatcher) stopClaiming() {
	d.stopOnce.Do(func() { close(d.stopC) })
	d.checkIdle()
}

func (d *dispatcher) checkIdle() {
	d.mu.Lock()
	defer d.mu.Unlock()
	select {
	case <-d.stopC:
	default:
		return
	}
	if len(d.inflight) == 0 {
		select {
		case <-d.idle:
		default:
			close(d.idle)
		}
	}
}

// drain waits until no job is in flight or ctx is done.
func (d *dispatcher) drain(ctx context.Context) {
	select {
	case <-d.idle:
	case <-ctx.Done():
		d.mu.Lock()
		n := len(d.inflight)
		d.mu.Unlock()
		d.e.log.Warn("abandoning running jobs at shutdown; they run again after restart",
			"processor", d.name, "runs", n)
	}
}

// reporter is the Reporter handed to a dispatcher's processor.
type reporter struct{ d *dispatcher }

func (r reporter) Complete(runID string, o Outcome) { r.d.e.recorder.complete(r.d, runID, o) }

func (r reporter) Progress(runID, kind, message string) {
	ts := api.Timestamp(r.d.e.now())
	r.d.e.progress.add(runID, &api.ProgressMessageEvent{
		Type: api.EventProgressPrefix + kind, Message: message, Timestamp: &ts,
	})
	r.d.e.hub.runChanged(runID)
}

func (r reporter) Checkpoint(ctx context.Context, runID string, state json.RawMessage) error {
	if err := r.d.e.store.SaveCheckpoint(ctx, runID, state); err != nil {
		return fmt.Errorf("save checkpoint: %w", err)
	}
	return nil
}
