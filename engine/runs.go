package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/store"
)

// Limits of the single-run calls.
const (
	maxRunStreamAge   = 570 * time.Second
	maxProgressPerRun = 200
)

var _ api.TaskRuns = (*Engine)(nil)

// CreateRun queues one run outside any group.
func (e *Engine) CreateRun(ctx context.Context, in api.TaskRunInput) (api.TaskRun, error) {
	_, runs, err := e.submit(ctx, "", []api.TaskRunInput{in}, nil, "")
	if err != nil {
		return api.TaskRun{}, err
	}
	return taskRun(&runs[0]), nil
}

// run loads a run the caller owns.
func (e *Engine) run(ctx context.Context, id string) (store.Run, error) {
	r, err := e.store.GetRun(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && r.Owner != OwnerFrom(ctx)) {
		return store.Run{}, api.Errorf(api.ErrNotFound, "Run id not found")
	}
	if err != nil {
		return store.Run{}, fmt.Errorf("load run: %w", err)
	}
	return r, nil
}

// GetRun returns a run's status object.
func (e *Engine) GetRun(ctx context.Context, runID string) (api.TaskRun, error) {
	r, err := e.run(ctx, runID)
	if err != nil {
		return api.TaskRun{}, err
	}
	return taskRun(&r), nil
}

// GetRunInput returns the run's input as submitted, with its resolved spec.
func (e *Engine) GetRunInput(ctx context.Context, runID string) (api.TaskRunInput, error) {
	r, err := e.run(ctx, runID)
	if err != nil {
		return api.TaskRunInput{}, err
	}
	return runInput(&r)
}

// GetRunResult waits up to timeout for the run to finish: the result of a
// completed run, api.ErrTimeout while it is active, api.ErrNotFound when it
// failed or was cancelled.
func (e *Engine) GetRunResult(ctx context.Context, runID string, timeout time.Duration) (api.TaskRunResult, error) {
	sub, unsubscribe := e.hub.subscribeRun(runID)
	defer unsubscribe()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	poll := time.NewTicker(e.poll)
	defer poll.Stop()
	for {
		r, err := e.run(ctx, runID)
		if err != nil {
			return api.TaskRunResult{}, err
		}
		switch r.Status {
		case api.StatusCompleted:
			out, err := runOutput(&r)
			if err != nil {
				return api.TaskRunResult{}, err
			}
			return api.TaskRunResult{Run: taskRun(&r), Output: *out}, nil
		case api.StatusFailed, api.StatusCancelled:
			msg := "Run failed or run id not found"
			if tr := taskRun(&r); tr.Error != nil {
				msg = fmt.Sprintf("Run %s: %s", r.Status, tr.Error.Message)
			}
			return api.TaskRunResult{}, api.Errorf(api.ErrNotFound, "%s", msg)
		}
		select {
		case <-ctx.Done():
			return api.TaskRunResult{}, ctx.Err()
		case <-deadline.C:
			return api.TaskRunResult{}, api.Errorf(api.ErrTimeout, "Request timed out; run still active")
		case <-sub.C:
		case <-poll.C:
		}
		if e.stopping.Load() {
			return api.TaskRunResult{}, ErrStopped
		}
	}
}

// RunEvents streams a run's current state, the progress messages recorded
// so far, then live updates, and ends with the final state (with the output
// of a completed run), or after 570 seconds.
func (e *Engine) RunEvents(ctx context.Context, runID string, fn func(api.Event) error) error {
	r, err := e.run(ctx, runID)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, maxRunStreamAge)
	defer cancel()
	sub, unsubscribe := e.hub.subscribeRun(runID)
	defer unsubscribe()
	poll := time.NewTicker(e.poll)
	defer poll.Stop()

	// The current state first, unless the run is already over.
	if !r.Status.Terminal() {
		ev, err := runEvent(&r, nil, false, false)
		if err != nil {
			return err
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	sent := 0
	for {
		// Progress messages not sent yet, then the final state.
		for _, msg := range e.progress.since(runID, sent) {
			if err := fn(msg); err != nil {
				return err
			}
			sent++
		}
		if r.Status.Terminal() {
			ev, err := runEvent(&r, nil, false, true)
			if err != nil {
				return err
			}
			return fn(ev)
		}
		select {
		case <-ctx.Done():
			return ignoreDeadline(ctx, ctx.Err())
		case <-sub.C:
		case <-poll.C:
		}
		if e.stopping.Load() {
			return nil
		}
		if r, err = e.run(ctx, runID); err != nil {
			return ignoreDeadline(ctx, err)
		}
	}
}

// CancelRun cancels one run: queued becomes cancelled, running goes through
// cancelling. Cancelling a finished run changes nothing.
func (e *Engine) CancelRun(ctx context.Context, runID string) (api.TaskRun, error) {
	r, err := e.run(ctx, runID)
	if err != nil {
		return api.TaskRun{}, err
	}
	if err := e.cancel(ctx, r.GroupID, []string{runID}); err != nil {
		return api.TaskRun{}, err
	}
	return e.GetRun(ctx, runID)
}

// cancel cancels runs in the store and finishes at once those that this
// node is executing; their processors' late outcomes are then ignored.
func (e *Engine) cancel(ctx context.Context, groupID string, runIDs []string) error {
	res, err := e.store.CancelRuns(ctx, groupID, runIDs, e.now())
	if err != nil {
		return fmt.Errorf("cancel runs: %w", err)
	}
	e.afterFinish(res)
	for _, r := range res.Applied {
		if r.Status == api.StatusCancelling {
			for _, d := range e.dispatchers {
				d.cancelJob(r.ID)
			}
		}
	}
	return nil
}

// progressLog keeps the progress messages of active runs in memory for
// their event streams; they are not durable.
type progressLog struct {
	mu   sync.Mutex
	runs map[string][]api.Event
}

func (p *progressLog) add(runID string, ev api.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.runs == nil {
		p.runs = make(map[string][]api.Event)
	}
	if len(p.runs[runID]) < maxProgressPerRun {
		p.runs[runID] = append(p.runs[runID], ev)
	}
}

func (p *progressLog) since(runID string, n int) []api.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	msgs := p.runs[runID]
	if n >= len(msgs) {
		return nil
	}
	return append([]api.Event(nil), msgs[n:]...)
}

func (p *progressLog) forget(runID string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.runs, runID)
}
