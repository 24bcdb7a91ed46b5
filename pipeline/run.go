package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/sinks"
	"github.com/taskpipe/taskpipe/specs"
)

// runner is the shared state of one pipeline run.
type runner struct {
	opts     Options
	log      *slog.Logger
	mapper   *mapper
	table    specs.Table
	builder  *rowBuilder
	specHash string
	state    *stateStore
	pass     int64
	groupID  string
	group    groupRecord
	limiter  *rate.Limiter
	counts   counters

	// mu orders the submitter's decisions and run id records against the
	// follower's lookups and settles.
	mu sync.Mutex
	// addDone, set under mu while an add-runs call is in flight, is closed
	// once its run ids are recorded.
	addDone chan struct{}
	// outstanding counts rows of this pass waiting for a result.
	outstanding atomic.Int64
	// added is signalled after every add-runs call; submitted is closed
	// when the submitter is done.
	added     chan struct{}
	submitted chan struct{}
	// sinkMu serialises sink writes from the submitter and the follower.
	sinkMu sync.Mutex
}

// Plan is what a pipeline would do, without doing it: the columns it reads,
// the table it writes and the spec hash its runs carry.
type Plan struct {
	Columns  []Column
	Table    specs.Table
	SpecHash string
	// Warnings are the task spec's validation warnings.
	Warnings []api.Warning
}

// MakePlan checks that the source, key, mapping and task spec fit together
// and returns the table the pipeline writes. It reads no rows.
func MakePlan(ctx context.Context, src Source, key []string, mapping map[string]specs.MappingEntry,
	spec api.TaskSpec) (Plan, error) {
	p, _, err := makePlan(ctx, src, key, mapping, spec)
	return p, err
}

func makePlan(ctx context.Context, src Source, key []string, mapping map[string]specs.MappingEntry,
	spec api.TaskSpec) (Plan, *mapper, error) {
	cols, err := src.Columns(ctx)
	if err != nil {
		return Plan{}, nil, fmt.Errorf("describe source: %w", err)
	}
	warnings, err := specs.ValidateTaskSpec(spec)
	if err != nil {
		return Plan{}, nil, fmt.Errorf("check task spec: %w", err)
	}
	m, err := newMapper(cols, key, mapping, spec)
	if err != nil {
		return Plan{}, nil, err
	}
	table, err := specs.NewTable(m.keyCols, spec.OutputSchema)
	if err != nil {
		return Plan{}, nil, err
	}
	return Plan{Columns: cols, Table: table, SpecHash: specs.SpecHash(spec), Warnings: warnings}, m, nil
}

// ErrGroupLost marks a pass that cannot go on without paying again for
// runs in a task group the target cannot reach: the recorded group is not
// found while rows wait for it, or a sink that started empty needs results
// held by another target's group.
var ErrGroupLost = errors.New("task group out of reach")

// ErrPlan marks errors in the pipeline's configuration (a key or mapped
// column the source lacks, a bad task spec): fixing the spec is the cure.
var ErrPlan = errors.New("invalid pipeline")

// Run runs the pipeline: rows that need a run are submitted to the task
// group of opts.Target, results are written as runs finish, and the state
// store remembers everything needed to resume. It returns when every row of
// this run is written (or submitted, with NoWait).
func Run(ctx context.Context, opts Options) (Summary, error) {
	start := time.Now()
	opts, err := opts.withDefaults()
	if err != nil {
		return Summary{}, fmt.Errorf("%w: %w", ErrPlan, err)
	}
	r := &runner{opts: opts, log: opts.Logger, added: make(chan struct{}, 1),
		submitted: make(chan struct{})}

	// Plan: columns, mapping, table; open the sinks on the table.
	plan, m, err := makePlan(ctx, opts.Source, opts.Key, opts.Mapping, opts.TaskSpec)
	if err != nil {
		return Summary{}, fmt.Errorf("%w: %w", ErrPlan, err)
	}
	r.mapper, r.table, r.specHash = m, plan.Table, plan.SpecHash
	r.builder = newRowBuilder(plan.Table, plan.SpecHash)
	for _, s := range opts.Sinks {
		if err := s.Open(ctx, plan.Table); err != nil {
			return Summary{}, fmt.Errorf("open sink: %w", err)
		}
	}
	if c, ok := opts.Source.(Counter); ok {
		n, err := c.Count(ctx)
		if err != nil {
			return Summary{}, fmt.Errorf("count source rows: %w", err)
		}
		if opts.Limit > 0 {
			n = min(n, opts.Limit)
		}
		r.counts.total.Store(n)
	} else {
		r.counts.total.Store(-1)
	}

	// State: a new pass, the target's group (recorded before any run is
	// added) and runs whose add-runs reply a crash lost.
	r.state, err = openState(ctx, opts.StateDir, opts.StateLock)
	if err != nil {
		return Summary{}, err
	}
	defer r.state.Close()
	if r.pass, err = r.state.nextPass(ctx); err != nil {
		return Summary{}, err
	}
	if err := r.ensureGroup(ctx); err != nil {
		return Summary{}, err
	}
	if err := r.reconcile(ctx); err != nil {
		return Summary{}, err
	}
	if err := r.backfill(ctx); err != nil {
		return Summary{}, err
	}
	perCall := time.Duration(float64(time.Minute) / opts.AddsPerMinute)
	r.limiter = rate.NewLimiter(rate.Every(perCall), max(1, int(opts.AddsPerMinute/60)))

	// Submit and follow at once, so results land while rows are added.
	g, gctx := errgroup.WithContext(ctx)
	stopProgress := r.startProgress(start)
	g.Go(func() error {
		defer close(r.submitted)
		return r.submitAll(gctx)
	})
	if !opts.NoWait {
		g.Go(func() error { return r.follow(gctx, r.submitted) })
	}
	err = g.Wait()
	stopProgress()
	if err != nil {
		return r.summary(ctx, start), err
	}
	return r.summary(ctx, start), nil
}

// ensureGroup loads the target's group, or creates and records one.
func (r *runner) ensureGroup(ctx context.Context) error {
	rec, ok, err := r.state.group(ctx, r.opts.Target)
	if err != nil {
		return err
	}
	if ok {
		_, err := r.opts.Groups.GetTaskGroup(ctx, rec.GroupID)
		switch {
		case err == nil:
			r.groupID, r.group = rec.GroupID, rec
			return nil
		case errors.Is(err, api.ErrNotFound):
			n, err := r.state.countWaiting(ctx, rec.GroupID)
			if err != nil {
				return err
			}
			if n > 0 && !r.opts.NewGroup {
				return fmt.Errorf("%w: task group %s, recorded for this target, is not found "+
					"(another API key, or a server that lost it), and %d rows wait for runs in it: "+
					"run with the key that created it, or with --new-group to submit them again "+
					"in a new group", ErrGroupLost, rec.GroupID, n)
			}
			r.log.Warn("recorded task group is gone; starting a new one", "group_id", rec.GroupID,
				"rows_submitted_again", n)
		default:
			return fmt.Errorf("get group %s: %w", rec.GroupID, err)
		}
	}
	md := api.Metadata{"taskpipe": truncate(r.opts.Name, maxMetaValue)}
	if r.opts.MaxCost > 0 {
		md[api.MetadataMaxCost] = r.opts.MaxCost
	}
	g, err := r.opts.Groups.CreateTaskGroup(ctx, api.CreateTaskGroupRequest{Metadata: md})
	if err != nil {
		return fmt.Errorf("create task group: %w", err)
	}
	if err := r.state.setGroup(ctx, r.opts.Target, g.TaskGroupID); err != nil {
		return err
	}
	r.groupID, r.group = g.TaskGroupID, groupRecord{GroupID: g.TaskGroupID}
	r.log.Info("created task group", "group_id", g.TaskGroupID, "target", r.opts.Target)
	return nil
}

// reconcile repairs a crash between an add-runs call and the record of its
// run ids: rows left submitting adopt the group's runs whose metadata
// carries their key, fingerprint and spec; the others were never added and
// are forgotten, to be submitted again.
func (r *runner) reconcile(ctx context.Context) error {
	pending, err := r.state.submitting(ctx)
	if err != nil || len(pending) == 0 {
		return err
	}
	byMeta := make(map[string]string, len(pending)) // metadata key -> row key
	for k := range pending {
		byMeta[metaKey(k)] = k
	}
	best := map[string]api.TaskRun{}
	err = r.opts.Groups.GroupRuns(ctx, r.groupID, api.GroupRunsQuery{IncludeInput: true},
		func(ev *api.TaskRunEvent) error {
			md := ev.Run.Metadata
			if ev.Input != nil && ev.Input.Metadata != nil {
				md = ev.Input.Metadata
			}
			mk, _ := md[MetaKey].(string)
			key, ok := byMeta[mk]
			if !ok {
				return nil
			}
			row := pending[key]
			if md[MetaFingerprint] != row.Fingerprint || md[MetaSpec] != shortHash(row.SpecHash) ||
				row.GroupID != r.groupID {
				return nil
			}
			if prev, ok := best[key]; !ok || preferRun(ev.Run, prev) {
				best[key] = ev.Run
			}
			return nil
		})
	if err != nil {
		return fmt.Errorf("reconcile with group %s: %w", r.groupID, err)
	}

	// Adopt the runs found; forget the rest.
	var adopt []rowState
	var forget []string
	for key, row := range pending {
		run, ok := best[key]
		if !ok {
			forget = append(forget, key)
			continue
		}
		row.RunID, row.Status = run.RunID, stateSubmitted
		adopt = append(adopt, row)
	}
	if err := r.state.putRows(ctx, adopt); err != nil {
		return err
	}
	if err := r.state.deleteRows(ctx, forget); err != nil {
		return err
	}
	r.counts.adopted.Store(int64(len(adopt)))
	r.log.Info("reconciled an interrupted submission", "group_id", r.groupID,
		"adopted", len(adopt), "resubmitting", len(forget))
	return nil
}

// preferRun orders candidate runs of one row: completed before active
// before failed, then the newest.
func preferRun(a, b api.TaskRun) bool {
	rank := func(s api.RunStatus) int {
		switch {
		case s == api.StatusCompleted:
			return 0
		case s.Active():
			return 1
		}
		return 2
	}
	if rank(a.Status) != rank(b.Status) {
		return rank(a.Status) < rank(b.Status)
	}
	return a.RunID > b.RunID
}

// writeSinks writes rows to the sinks, one writer at a time.
func (r *runner) writeSinks(ctx context.Context, rows []sinks.Row) error {
	r.sinkMu.Lock()
	defer r.sinkMu.Unlock()
	return writeAll(ctx, r.opts.Sinks, rows)
}

// notifyAdded wakes a follower waiting for more runs.
func (r *runner) notifyAdded() {
	select {
	case r.added <- struct{}{}:
	default:
	}
}

// startProgress reports progress every ProgressEvery until the returned
// function is called, which reports the last snapshot.
func (r *runner) startProgress(start time.Time) func() {
	if r.opts.Progress == nil {
		return func() {}
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(r.opts.ProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				r.opts.Progress(r.counts.snapshot(r.groupID, time.Since(start)))
			}
		}
	}()
	return func() {
		close(stop)
		<-done
		p := r.counts.snapshot(r.groupID, time.Since(start))
		p.Done = true
		r.opts.Progress(p)
	}
}

// summary counts where the rows of this pass stand.
func (r *runner) summary(ctx context.Context, start time.Time) Summary {
	s := Summary{
		GroupID: r.groupID, SpecHash: r.specHash, Rows: r.counts.read.Load(),
		Submitted: r.counts.submitted.Load(), Reattached: r.counts.reattached.Load(),
		Skipped: r.counts.skipped.Load(), Adopted: r.counts.adopted.Load(),
		Duplicates: r.counts.duplicates.Load(), Waited: !r.opts.NoWait,
		Elapsed: time.Since(start),
	}
	if r.state != nil && r.pass > 0 {
		counts, err := r.state.countByStatus(ctx, r.pass)
		if err != nil {
			r.log.Warn("count row statuses", "error", err)
		}
		s.Statuses = counts
		for _, st := range failedStatuses {
			s.Failed += counts[st]
		}
		s.Pending = counts[stateSubmitted] + counts[stateSubmitting]
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// countSettled counts rows of this pass that reached a final status: they
// are no longer outstanding. Rows of an earlier pass settled on resume are
// not counted here; the pass counts them as skipped when it reads them.
func (r *runner) countSettled(inPass settled) {
	r.outstanding.Add(-inPass.total())
	for status, n := range inPass {
		switch status {
		case string(api.StatusCompleted):
			r.counts.completed.Add(n)
		case string(api.StatusCancelled):
			r.counts.cancelled.Add(n)
		case StatusInvalidOutput:
			r.counts.badOutputs.Add(n)
		default:
			r.counts.failed.Add(n)
		}
	}
}
