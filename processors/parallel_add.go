package processors

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/engine"
)

// This file adds runs upstream for the parallel kind: the add-runs calls
// with their checkpoints, and the adoption of runs a lost reply or a
// restart left without one.

// addChunk adds one call's worth of jobs to the engine group's upstream
// group, creating it first when needed.
func (p *Parallel) addChunk(lg *localGroup, jobs []*forwardJob) {
	ug, err := p.upstreamFor(lg)
	if err != nil {
		p.failJobs(jobs, err)
		return
	}

	// Save the group before adding, so that a restart after the add
	// looks for these runs upstream instead of adding them again.
	ready := jobs[:0:0]
	for _, fj := range jobs {
		if fj.upstreamGroup != ug.id {
			cp, _ := json.Marshal(parallelCheckpoint{UpstreamGroup: ug.id})
			if err := fj.r.Checkpoint(p.ctx, fj.job.RunID, cp); err != nil {
				if p.ctx.Err() == nil {
					fj.r.Complete(fj.job.RunID, engine.Outcome{Err: engine.Transient(err, 0)})
				}
				continue
			}
			fj.upstreamGroup = ug.id
		}
		ready = append(ready, fj)
	}
	p.submit(ug, ready)
}

// upstreamFor returns the upstream group of an engine group, creating it
// (with the engine group id in its metadata) on first use.
func (p *Parallel) upstreamFor(lg *localGroup) (*upstreamGroup, error) {
	p.mu.Lock()
	ug := lg.upstream
	p.mu.Unlock()
	if ug != nil {
		return ug, nil
	}
	req := api.CreateTaskGroupRequest{}
	if lg.key != "" {
		req.Metadata = api.Metadata{parallelGroupKey: lg.key}
	}
	var err error
	for attempt := range parallelAttempts {
		if err = p.limiter.Wait(p.ctx); err != nil {
			return nil, err
		}
		var g api.TaskGroup
		g, err = p.client.CreateTaskGroup(p.ctx, req)
		if err == nil {
			p.mu.Lock()
			ug = p.upstreamLocked(g.TaskGroupID)
			lg.upstream = ug
			p.mu.Unlock()
			return ug, nil
		}
		if definitive(err) || p.ctx.Err() != nil {
			return nil, err
		}
		p.log.Warn("create upstream group", "attempt", attempt+1, "error", err)
		sleepCtx(p.ctx, backoff(time.Second, attempt))
	}
	return nil, engine.Transient(fmt.Errorf("create upstream group: %w", err), 0)
}

// submit adds jobs to ug in one call. Replies the upstream cannot have acted
// on (429, 503) are tried again; after an ambiguous failure (a 5xx, a lost
// reply) the runs stream is read first and runs that were created are
// adopted, so that no run is added twice. 402, 403 and other refusals fail
// the jobs with the upstream's message; a 422 is bisected so that one bad
// input fails alone.
func (p *Parallel) submit(ug *upstreamGroup, jobs []*forwardJob) {
	for attempt := 0; len(jobs) > 0; attempt++ {
		if p.limiter.Wait(p.ctx) != nil {
			return
		}

		// Add and register under the group's add lock, so that batches
		// are registered in the order the upstream stored them.
		ug.addMu.Lock()
		resp, err := p.client.AddRuns(p.ctx, ug.id, p.request(jobs))
		if err == nil && len(resp.RunIDs) != len(jobs) {
			err = fmt.Errorf("add runs: upstream returned %d run ids for %d inputs",
				len(resp.RunIDs), len(jobs))
		}
		if err == nil {
			p.checkpointRuns(ug, jobs, resp.RunIDs)
			ug.mu.Lock()
			ug.register(jobs, resp)
			p.followLocked(ug)
			ug.mu.Unlock()
			ug.addMu.Unlock()
			return
		}
		ug.addMu.Unlock()
		if p.ctx.Err() != nil {
			return
		}

		// Decide what the failure means for these jobs.
		switch {
		case definitive(err):
			p.failJobs(jobs, err)
			return
		case errors.Is(err, api.ErrInvalid) || errors.Is(err, api.ErrTooLarge):
			if len(jobs) == 1 {
				p.failJobs(jobs, err)
				return
			}
			half := len(jobs) / 2
			p.submit(ug, jobs[:half])
			p.submit(ug, jobs[half:])
			return
		case attempt+1 >= parallelAttempts:
			p.failJobs(jobs, engine.Transient(fmt.Errorf("add runs upstream: %w", err), 0))
			return
		}
		p.log.Warn("add runs upstream", "group", ug.id, "runs", len(jobs), "attempt", attempt+1, "error", err)
		if !sleepCtx(p.ctx, backoff(time.Second, attempt)) {
			return
		}
		if !errors.Is(err, api.ErrRateLimited) && !errors.Is(err, api.ErrUnavailable) {
			rest, ok := p.adoptWithRetry(ug, jobs, true)
			if !ok {
				return
			}
			jobs = rest
		}
	}
}

// definitive reports whether an upstream refusal will not change on retry:
// 401, 402, 403 and 404.
func definitive(err error) bool {
	return errors.Is(err, api.ErrUnauthorized) || errors.Is(err, api.ErrPaymentRequired) ||
		errors.Is(err, api.ErrForbidden) || errors.Is(err, api.ErrNotFound)
}

// request builds the add-runs body: each input with the upstream
// processor, the engine run id in its metadata and no webhook (the engine
// sends its own); a task spec shared by all goes once as the default.
func (p *Parallel) request(jobs []*forwardJob) api.TaskGroupRunRequest {
	req := api.TaskGroupRunRequest{Inputs: make([]api.TaskRunInput, len(jobs))}
	var first []byte
	shared := true
	for i, fj := range jobs {
		in := fj.job.Input
		if p.opts.UpstreamProcessor != "" {
			in.Processor = p.opts.UpstreamProcessor
		}
		in.Webhook = nil
		md := make(api.Metadata, len(in.Metadata)+1)
		for k, v := range in.Metadata {
			md[k] = v
		}
		md[parallelRunKey] = fj.job.RunID
		in.Metadata = md
		req.Inputs[i] = in
		if shared {
			spec, _ := json.Marshal(in.TaskSpec)
			if i == 0 {
				first = spec
			} else if string(spec) != string(first) {
				shared = false
			}
		}
	}
	if shared && jobs[0].job.Input.TaskSpec != nil {
		req.DefaultTaskSpec = jobs[0].job.Input.TaskSpec
		for i := range req.Inputs {
			req.Inputs[i].TaskSpec = nil
		}
	}
	return req
}

// checkpointRuns saves each job's upstream run. A failure is logged: the
// group checkpoint and the run's metadata still let a restart adopt it.
func (p *Parallel) checkpointRuns(ug *upstreamGroup, jobs []*forwardJob, runIDs []string) {
	for i, fj := range jobs {
		cp, _ := json.Marshal(parallelCheckpoint{UpstreamGroup: ug.id, UpstreamRun: runIDs[i]})
		if err := fj.r.Checkpoint(p.ctx, fj.job.RunID, cp); err != nil && p.ctx.Err() == nil {
			p.log.Warn("checkpoint upstream run", "run_id", fj.job.RunID, "upstream_run", runIDs[i], "error", err)
		}
	}
}

// adoptWithRetry is adopt, repeated after failed reads. ok is false when
// the processor closed or the jobs were failed (transient) instead.
func (p *Parallel) adoptWithRetry(ug *upstreamGroup, jobs []*forwardJob, fromTail bool) (
	rest []*forwardJob, ok bool) {
	var err error
	for attempt := range parallelAttempts {
		rest, err = p.adopt(ug, jobs, fromTail)
		if err == nil {
			return rest, true
		}
		if p.ctx.Err() != nil {
			return nil, false
		}
		p.log.Warn("read upstream runs to adopt", "group", ug.id, "attempt", attempt+1, "error", err)
		if !sleepCtx(p.ctx, backoff(time.Second, attempt)) {
			return nil, false
		}
	}
	p.failJobs(jobs, engine.Transient(fmt.Errorf("read upstream runs to adopt: %w", err), 0))
	return nil, false
}

// adopt reads ug's runs stream once and takes over runs whose metadata
// names one of jobs: they are checkpointed and completed, or followed
// while active. It returns the jobs that have no upstream run. The read
// starts at the beginning, or with fromTail (after a failed add of this
// process) before the newest registered batch.
func (p *Parallel) adopt(ug *upstreamGroup, jobs []*forwardJob, fromTail bool) ([]*forwardJob, error) {
	want := make(map[string]*forwardJob, len(jobs))
	for _, fj := range jobs {
		want[fj.job.RunID] = fj
	}
	from := ""
	if fromTail {
		ug.mu.Lock()
		from = ug.tail
		ug.mu.Unlock()
	}
	err := p.client.GroupRuns(p.ctx, ug.id, api.GroupRunsQuery{LastEventID: from, IncludeOutput: true},
		func(ev *api.TaskRunEvent) error {
			tag, _ := ev.Run.Metadata[parallelRunKey].(string)
			fj, ok := want[tag]
			if !ok {
				return nil
			}
			delete(want, tag)
			cp, _ := json.Marshal(parallelCheckpoint{UpstreamGroup: ug.id, UpstreamRun: ev.Run.RunID})
			if err := fj.r.Checkpoint(p.ctx, fj.job.RunID, cp); err != nil && p.ctx.Err() == nil {
				p.log.Warn("checkpoint adopted run", "run_id", fj.job.RunID, "error", err)
			}
			if ev.Run.Status.Terminal() {
				fj.r.Complete(fj.job.RunID, runOutcome(ug.id, ev))
			} else {
				ug.mu.Lock()
				ug.reattach(fj, ev.Run.RunID)
				if ug.signalled[ev.Run.RunID] == sigCheck {
					ug.unsignal(ev.Run.RunID) // just seen active
				}
				p.followLocked(ug)
				ug.mu.Unlock()
			}
			if len(want) == 0 {
				return errReadDone
			}
			return nil
		})
	if err != nil && !errors.Is(err, errReadDone) {
		return nil, err
	}
	rest := make([]*forwardJob, 0, len(want))
	for _, fj := range jobs {
		if _, ok := want[fj.job.RunID]; ok {
			rest = append(rest, fj)
		}
	}
	if adopted := len(jobs) - len(rest); adopted > 0 {
		p.log.Info("adopted upstream runs", "group", ug.id, "runs", adopted)
	}
	return rest, nil
}

// failJobs completes jobs with err.
func (p *Parallel) failJobs(jobs []*forwardJob, err error) {
	for _, fj := range jobs {
		fj.r.Complete(fj.job.RunID, engine.Outcome{Err: err})
	}
}

// runOutcome turns a terminal upstream run into the job's outcome: the
// output as the upstream gave it, or the upstream's error.
func runOutcome(groupID string, ev *api.TaskRunEvent) engine.Outcome {
	usage := map[string]any{"upstream_group": groupID, "upstream_run": ev.Run.RunID}
	switch ev.Run.Status {
	case api.StatusCompleted:
		if ev.Output == nil {
			return engine.Outcome{Usage: usage, Err: engine.Transient(
				fmt.Errorf("upstream run %s completed without output", ev.Run.RunID), 0)}
		}
		return engine.Outcome{Output: ev.Output, Usage: usage}
	case api.StatusFailed:
		msg := "upstream run failed without a message"
		if ev.Run.Error != nil && ev.Run.Error.Message != "" {
			msg = ev.Run.Error.Message
		}
		return engine.Outcome{Usage: usage, Err: errors.New(msg)}
	default:
		return engine.Outcome{Usage: usage, Err: fmt.Errorf("upstream run %s was %s", ev.Run.RunID, ev.Run.Status)}
	}
}
