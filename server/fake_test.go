package server

import (
	"context"
	"sync"
	"time"

	"github.com/taskpipe/taskpipe/api"
)

// fakeService is a scripted Service for handler tests that need no engine.
// Each call records the owner it acted for; the hooks replace behaviour.
type fakeService struct {
	mu     sync.Mutex
	owners []string
	addReq *api.TaskGroupRunRequest
	runsQ  *api.GroupRunsQuery
	evQ    *api.GroupEventsQuery
	resTO  time.Duration

	groupRuns   func(ctx context.Context, q api.GroupRunsQuery, fn func(*api.TaskRunEvent) error) error
	groupEvents func(ctx context.Context, q api.GroupEventsQuery, fn func(api.Event) error) error
	result      func(ctx context.Context, timeout time.Duration) (api.TaskRunResult, error)
	getGroup    func(ctx context.Context, id string) (api.TaskGroup, error)
}

var _ Service = (*fakeService)(nil)

func (f *fakeService) record(ctx context.Context) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.owners = append(f.owners, ownerFrom(ctx))
}

func (f *fakeService) lastOwner() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.owners) == 0 {
		return ""
	}
	return f.owners[len(f.owners)-1]
}

func sp(s string) *string { return &s }

func fakeRun(id string) api.TaskRun {
	return api.TaskRun{RunID: id, InteractionID: id, Status: api.StatusQueued, IsActive: true,
		Processor: "synthetic", CreatedAt: sp("2026-01-02T03:04:05.000000Z"),
		ModifiedAt: sp("2026-01-02T03:04:05.000000Z")}
}

func (f *fakeService) CreateTaskGroup(ctx context.Context, req api.CreateTaskGroupRequest) (api.TaskGroup, error) {
	f.record(ctx)
	return api.TaskGroup{TaskGroupID: "tgrp_1", Metadata: req.Metadata,
		CreatedAt: sp("2026-01-02T03:04:05.000000Z")}, nil
}

func (f *fakeService) GetTaskGroup(ctx context.Context, id string) (api.TaskGroup, error) {
	f.record(ctx)
	if f.getGroup != nil {
		return f.getGroup(ctx, id)
	}
	if id != "tgrp_1" {
		return api.TaskGroup{}, api.Errorf(api.ErrNotFound, "TaskGroup not found")
	}
	return api.TaskGroup{TaskGroupID: id}, nil
}

func (f *fakeService) AddRuns(ctx context.Context, id string, req api.TaskGroupRunRequest) (api.TaskGroupRunResponse, error) {
	f.record(ctx)
	f.mu.Lock()
	f.addReq = &req
	f.mu.Unlock()
	for _, in := range req.Inputs {
		if in.Processor == "nope" {
			return api.TaskGroupRunResponse{}, api.Errorf(api.ErrForbidden, "unknown processor %q", in.Processor)
		}
	}
	ids := make([]string, len(req.Inputs))
	for i := range ids {
		ids[i] = "trun_" + string(rune('a'+i%26))
	}
	return api.TaskGroupRunResponse{RunIDs: ids}, nil
}

func (f *fakeService) GroupRuns(ctx context.Context, id string, q api.GroupRunsQuery, fn func(*api.TaskRunEvent) error) error {
	f.record(ctx)
	f.mu.Lock()
	f.runsQ = &q
	f.mu.Unlock()
	if f.groupRuns != nil {
		return f.groupRuns(ctx, q, fn)
	}
	if id != "tgrp_1" {
		return api.Errorf(api.ErrNotFound, "TaskGroup not found")
	}
	for _, seq := range []string{"1", "2"} {
		if err := fn(&api.TaskRunEvent{Type: api.EventRunState, EventID: sp(seq),
			Run: fakeRun("trun_" + seq)}); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeService) GroupEvents(ctx context.Context, id string, q api.GroupEventsQuery, fn func(api.Event) error) error {
	f.record(ctx)
	f.mu.Lock()
	f.evQ = &q
	f.mu.Unlock()
	if f.groupEvents != nil {
		return f.groupEvents(ctx, q, fn)
	}
	return fn(&api.TaskGroupStatusEvent{Type: api.EventGroupStatus, EventID: "1"})
}

func (f *fakeService) GetGroupRun(ctx context.Context, groupID, runID string) (api.TaskRun, error) {
	f.record(ctx)
	if groupID != "tgrp_1" {
		return api.TaskRun{}, api.Errorf(api.ErrNotFound, "Run id not found")
	}
	return fakeRun(runID), nil
}

func (f *fakeService) CancelRun(ctx context.Context, runID string) (api.TaskRun, error) {
	f.record(ctx)
	r := fakeRun(runID)
	r.Status, r.IsActive = api.StatusCancelled, false
	return r, nil
}

func (f *fakeService) CancelGroup(ctx context.Context, groupID string) (api.TaskGroup, error) {
	f.record(ctx)
	return api.TaskGroup{TaskGroupID: groupID}, nil
}

func (f *fakeService) CreateRun(ctx context.Context, in api.TaskRunInput) (api.TaskRun, error) {
	f.record(ctx)
	if in.Processor == "panic" {
		panic("scripted panic")
	}
	return fakeRun("trun_new"), nil
}

func (f *fakeService) GetRun(ctx context.Context, runID string) (api.TaskRun, error) {
	f.record(ctx)
	return fakeRun(runID), nil
}

func (f *fakeService) GetRunInput(ctx context.Context, runID string) (api.TaskRunInput, error) {
	f.record(ctx)
	return api.TaskRunInput{Input: []byte(`"hello"`), Processor: "synthetic"}, nil
}

func (f *fakeService) GetRunResult(ctx context.Context, runID string, timeout time.Duration) (api.TaskRunResult, error) {
	f.record(ctx)
	f.mu.Lock()
	f.resTO = timeout
	f.mu.Unlock()
	if f.result != nil {
		return f.result(ctx, timeout)
	}
	run := fakeRun(runID)
	run.Status, run.IsActive = api.StatusCompleted, false
	return api.TaskRunResult{Run: run, Output: api.Output{Type: api.OutputText,
		Content: []byte(`"done"`)}}, nil
}

func (f *fakeService) RunEvents(ctx context.Context, runID string, fn func(api.Event) error) error {
	f.record(ctx)
	if err := fn(&api.TaskRunEvent{Type: api.EventRunState, Run: fakeRun(runID)}); err != nil {
		return err
	}
	return fn(&api.ProgressMessageEvent{Type: "task_run.progress_msg.plan", Message: "plan"})
}

func (f *fakeService) Ready(ctx context.Context) error { return nil }

// locked returns get() read under the service's lock.
func (f *fakeService) locked(get func() any) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return get()
}

type testOwnerKey struct{}

// withTestOwner stands in for engine.WithOwner.
func withTestOwner(ctx context.Context, owner string) context.Context {
	return context.WithValue(ctx, testOwnerKey{}, owner)
}

// ownerFrom reads the owner set by withTestOwner.
func ownerFrom(ctx context.Context) string {
	o, _ := ctx.Value(testOwnerKey{}).(string)
	return o
}
