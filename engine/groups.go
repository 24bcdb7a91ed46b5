package engine

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	gojson "github.com/goccy/go-json"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/store"
)

// Stream limits.
const (
	pageSize          = 1000
	maxGroupStreamAge = time.Hour
)

var _ api.TaskGroups = (*Engine)(nil)

// idCounter orders ids made within the same millisecond.
var idCounter atomic.Uint32

// newID returns prefix followed by 32 hex characters, the form of the API's
// run ids: a millisecond timestamp and a counter, then 8 random bytes. Ids
// made later sort later, so the store's unique index grows at its end
// instead of being rewritten all over for every batch.
func newID(prefix string) string {
	var b [16]byte
	ms := uint64(time.Now().UnixMilli())
	binary.BigEndian.PutUint64(b[:8], ms<<16|uint64(idCounter.Add(1)&0xffff))
	_, _ = rand.Read(b[8:])
	return prefix + hex.EncodeToString(b[:])
}

// CreateTaskGroup creates an empty group owned by the caller.
func (e *Engine) CreateTaskGroup(ctx context.Context, req api.CreateTaskGroupRequest) (api.TaskGroup, error) {
	if e.stopping.Load() {
		return api.TaskGroup{}, ErrStopped
	}
	if err := checkMetadata("metadata", req.Metadata); err != nil {
		return api.TaskGroup{}, err
	}
	maxCost, err := e.groupBudget(req.Metadata)
	if err != nil {
		return api.TaskGroup{}, err
	}
	now := e.now()
	g := store.Group{
		ID:         newID("tgrp_"),
		Owner:      OwnerFrom(ctx),
		Metadata:   req.Metadata,
		CreatedAt:  now,
		ModifiedAt: now,
		MaxCost:    maxCost,
	}
	if err := e.store.CreateGroup(ctx, g); err != nil {
		return api.TaskGroup{}, fmt.Errorf("create group: %w", err)
	}
	return taskGroup(g), nil
}

// groupBudget returns a new group's cost cap: the lower of the engine's
// cap and the one its metadata asks for (0: none).
func (e *Engine) groupBudget(md api.Metadata) (float64, error) {
	limit := e.maxCost
	v, ok := md[api.MetadataMaxCost]
	if !ok {
		return limit, nil
	}
	asked, ok := v.(float64)
	if !ok || asked <= 0 {
		return 0, api.Errorf(api.ErrInvalid, "metadata.%s: must be a positive number of US dollars", api.MetadataMaxCost)
	}
	if limit <= 0 || asked < limit {
		limit = asked
	}
	return limit, nil
}

// group loads a group the caller owns.
func (e *Engine) group(ctx context.Context, id string) (store.Group, error) {
	g, err := e.store.GetGroup(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && g.Owner != OwnerFrom(ctx)) {
		return store.Group{}, api.Errorf(api.ErrNotFound, "TaskGroup not found")
	}
	if err != nil {
		return store.Group{}, fmt.Errorf("load group: %w", err)
	}
	return g, nil
}

// GetTaskGroup returns a group and its status summary.
func (e *Engine) GetTaskGroup(ctx context.Context, groupID string) (api.TaskGroup, error) {
	g, err := e.group(ctx, groupID)
	if err != nil {
		return api.TaskGroup{}, err
	}
	return taskGroup(g), nil
}

// AddRuns validates every input (all or nothing) and adds them to the group
// in order. The reply carries the new run ids and the stream cursors from
// before the batch.
func (e *Engine) AddRuns(ctx context.Context, groupID string, req api.TaskGroupRunRequest) (api.TaskGroupRunResponse, error) {
	if len(req.Inputs) == 0 {
		return api.TaskGroupRunResponse{}, api.Errorf(api.ErrInvalid, "inputs: must hold at least one run")
	}
	if len(req.Inputs) > api.MaxRunsPerAdd {
		return api.TaskGroupRunResponse{}, api.Errorf(api.ErrInvalid,
			"inputs: %d runs, more than the limit of %d per call", len(req.Inputs), api.MaxRunsPerAdd)
	}
	if _, err := e.group(ctx, groupID); err != nil {
		return api.TaskGroupRunResponse{}, err
	}
	res, runs, err := e.submit(ctx, groupID, req.Inputs, req.DefaultTaskSpec, "inputs")
	if err != nil {
		return api.TaskGroupRunResponse{}, err
	}
	ids := make([]string, len(runs))
	for i := range runs {
		ids[i] = runs[i].ID
	}
	return api.TaskGroupRunResponse{
		Status:      taskGroup(res.Group).Status,
		RunIDs:      ids,
		RunCursor:   formatCursor(res.PrevRunSeq),
		EventCursor: formatCursor(res.PrevEventSeq),
	}, nil
}

// submit checks inputs and stores them as queued runs of groupID ("" for
// standalone runs). field names the inputs in error messages.
func (e *Engine) submit(ctx context.Context, groupID string, inputs []api.TaskRunInput,
	def *api.TaskSpec, field string) (store.AddResult, []store.Run, error) {
	if e.stopping.Load() {
		return store.AddResult{}, nil, ErrStopped
	}

	// Check every input before storing any.
	now := e.now()
	owner := OwnerFrom(ctx)
	runs := make([]store.Run, len(inputs))
	specJSON := make(map[string]json.RawMessage)
	seen := make(map[*api.TaskSpec]*specInfo)
	for i := range inputs {
		in := inputs[i]
		name := field
		if field == "inputs" {
			name = fmt.Sprintf("inputs[%d]", i)
		}
		info, warnings, err := e.checkInput(name, &in, def, seen)
		if err != nil {
			return store.AddResult{}, nil, err
		}
		in.TaskSpec = nil
		raw, err := gojson.Marshal(in)
		if err != nil {
			return store.AddResult{}, nil, fmt.Errorf("encode input %d: %w", i, err)
		}
		var warnJSON json.RawMessage
		if len(warnings) > 0 {
			warnJSON, _ = json.Marshal(warnings)
		}
		specJSON[info.hash] = info.json
		backend := e.backends[in.Processor]
		var cacheKey string
		if backend.CacheMaxAge > 0 {
			cacheKey = resultCacheKey(in, info.hash)
		}
		runs[i] = store.Run{
			Cost:       backend.PricePerRun,
			CacheKey:   cacheKey,
			ID:         newID("trun_"),
			GroupID:    groupID,
			Owner:      owner,
			Processor:  in.Processor,
			Status:     api.StatusQueued,
			Input:      raw,
			SpecHash:   info.hash,
			Warnings:   warnJSON,
			CreatedAt:  now,
			ModifiedAt: now,
		}
	}

	// Claim at once the runs that have a free processor slot, so they need
	// no second write, then store everything in one transaction.
	claimed := e.claimAtInsert(runs, now)
	res, err := e.store.AddRuns(ctx, groupID, runs, specJSON)
	if err != nil {
		for p, idx := range claimed {
			e.dispatchers[p].release(len(idx))
		}
		if errors.Is(err, store.ErrBudget) {
			return store.AddResult{}, nil, e.budgetError(ctx, groupID, runs)
		}
		return store.AddResult{}, nil, fmt.Errorf("add runs: %w", err)
	}
	e.hub.publish(res.Events)

	// Start the claimed runs and wake the dispatchers for the rest.
	processors := make(map[string]bool)
	for i := range runs {
		processors[runs[i].Processor] = true
	}
	for p := range processors {
		d := e.dispatchers[p]
		d.wake()
		if idx := claimed[p]; len(idx) > 0 {
			batch := make([]store.Run, len(idx))
			for k, i := range idx {
				batch[k] = runs[i]
			}
			d.dispatchClaimed(batch)
		}
	}
	e.metrics.submitted(runs)
	return res, runs, nil
}

// claimAtInsert marks as claimed by this node the runs for which their
// processor has a free slot now, and returns their indexes by processor.
func (e *Engine) claimAtInsert(runs []store.Run, now time.Time) map[string][]int {
	wanted := make(map[string][]int)
	for i := range runs {
		wanted[runs[i].Processor] = append(wanted[runs[i].Processor], i)
	}
	claimed := make(map[string][]int, len(wanted))
	for p, idx := range wanted {
		d := e.dispatchers[p]
		n := d.reserve(len(idx))
		if n == 0 {
			continue
		}
		for _, i := range idx[:n] {
			r := &runs[i]
			r.Status = api.StatusRunning
			r.Attempt = 1
			r.LeaseOwner = e.node
			r.LeaseUntil = now.Add(d.backend.Timeout + leaseGrace)
		}
		claimed[p] = idx[:n]
	}
	return claimed
}

// budgetError explains a batch refused for the group's budget.
func (e *Engine) budgetError(ctx context.Context, groupID string, runs []store.Run) error {
	var cost float64
	for i := range runs {
		cost += runs[i].Cost
	}
	g, err := e.store.GetGroup(ctx, groupID)
	if err != nil {
		return api.Errorf(api.ErrPaymentRequired, "task group budget exceeded")
	}
	return api.Errorf(api.ErrPaymentRequired,
		"task group budget exceeded: these %d runs cost $%.4f, the group has spent $%.4f of its $%.4f",
		len(runs), cost, g.Cost, g.MaxCost).WithDetail(map[string]any{
		"batch_cost_usd": cost, "group_cost_usd": g.Cost, "max_cost_usd": g.MaxCost,
	})
}

// GroupRuns streams a snapshot of the group's runs in insertion order,
// resuming after q.LastEventID. It does not wait for active runs.
func (e *Engine) GroupRuns(ctx context.Context, groupID string, q api.GroupRunsQuery, fn func(*api.TaskRunEvent) error) error {
	g, err := e.group(ctx, groupID)
	if err != nil {
		return err
	}
	if q.Status != "" && !q.Status.Valid() {
		return api.Errorf(api.ErrInvalid, "status: %q is not a run status", q.Status)
	}
	after, err := parseCursor(q.LastEventID, g.LastRunSeq)
	if err != nil {
		return err
	}

	// Page through the runs that existed when the snapshot began.
	for after < g.LastRunSeq {
		runs, err := e.store.ListRuns(ctx, groupID, after, q.Status, pageSize)
		if err != nil {
			return fmt.Errorf("list runs: %w", err)
		}
		if len(runs) == 0 {
			return nil
		}
		for i := range runs {
			r := &runs[i]
			if r.Seq > g.LastRunSeq {
				return nil
			}
			ev, err := runEvent(r, formatCursor(r.Seq), q.IncludeInput, q.IncludeOutput)
			if err != nil {
				return err
			}
			if err := fn(ev); err != nil {
				return err
			}
			after = r.Seq
		}
	}
	return nil
}

// runEvent builds a task_run.state event for a stored run.
func runEvent(r *store.Run, id *string, withInput, withOutput bool) (*api.TaskRunEvent, error) {
	ev := &api.TaskRunEvent{Type: api.EventRunState, EventID: id, Run: taskRun(r)}
	if withInput {
		in, err := runInput(r)
		if err != nil {
			return nil, err
		}
		ev.Input = &in
	}
	if withOutput {
		out, err := runOutput(r)
		if err != nil {
			return nil, err
		}
		ev.Output = out
	}
	return ev, nil
}

// GroupEvents streams the group's event log after q.LastEventID and follows
// it while the group is active, up to q.Timeout (at most an hour).
func (e *Engine) GroupEvents(ctx context.Context, groupID string, q api.GroupEventsQuery, fn func(api.Event) error) error {
	g, err := e.group(ctx, groupID)
	if err != nil {
		return err
	}
	after, err := parseCursor(q.LastEventID, g.LastEventSeq)
	if err != nil {
		return err
	}
	limit := q.Timeout
	if limit <= 0 || limit > maxGroupStreamAge {
		limit = maxGroupStreamAge
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	sub, unsubscribe := e.hub.subscribeGroup(groupID)
	defer unsubscribe()
	poll := time.NewTicker(e.poll)
	defer poll.Stop()

	for {
		// Send everything logged after the cursor.
		for {
			events, err := e.store.ListEvents(ctx, groupID, after, pageSize)
			if err != nil {
				return ignoreDeadline(ctx, fmt.Errorf("list events: %w", err))
			}
			for i := range events {
				if err := fn(apiEvent(&events[i])); err != nil {
					return err
				}
				after = events[i].Seq
			}
			if len(events) < pageSize {
				break
			}
		}

		// End once the group is inactive and its log fully sent.
		g, err := e.store.GetGroup(ctx, groupID)
		if err != nil {
			return ignoreDeadline(ctx, fmt.Errorf("load group: %w", err))
		}
		if !g.Active() && after >= g.LastEventSeq {
			return nil
		}
		if e.stopping.Load() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ignoreDeadline(ctx, ctx.Err())
		case <-sub.C:
		case <-poll.C:
		}
	}
}

// ignoreDeadline turns the stream's own time limit into a normal end.
func ignoreDeadline(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return nil
	}
	return err
}

// apiEvent converts a logged event.
func apiEvent(ev *store.Event) api.Event {
	id := formatCursor(ev.Seq)
	if ev.Kind == store.EventGroupStatus && ev.Status != nil {
		return &api.TaskGroupStatusEvent{Type: api.EventGroupStatus, EventID: *id, Status: snapshotStatus(ev.Status)}
	}
	out := &api.TaskRunEvent{Type: api.EventRunState, EventID: id}
	if ev.Run != nil {
		out.Run = taskRun(ev.Run)
	} else {
		out.Run = api.TaskRun{RunID: ev.RunID, InteractionID: ev.RunID}
	}
	return out
}

// GetGroupRun returns one run of a group.
func (e *Engine) GetGroupRun(ctx context.Context, groupID, runID string) (api.TaskRun, error) {
	if _, err := e.group(ctx, groupID); err != nil {
		return api.TaskRun{}, err
	}
	r, err := e.run(ctx, runID)
	if err != nil {
		return api.TaskRun{}, err
	}
	if r.GroupID != groupID {
		return api.TaskRun{}, api.Errorf(api.ErrNotFound, "Run id not found in this task group")
	}
	return taskRun(&r), nil
}

// CancelGroup cancels every active run of the group: queued runs become
// cancelled at once, running runs go through cancelling.
func (e *Engine) CancelGroup(ctx context.Context, groupID string) (api.TaskGroup, error) {
	if _, err := e.group(ctx, groupID); err != nil {
		return api.TaskGroup{}, err
	}
	if err := e.cancel(ctx, groupID, nil); err != nil {
		return api.TaskGroup{}, err
	}
	return e.GetTaskGroup(ctx, groupID)
}
