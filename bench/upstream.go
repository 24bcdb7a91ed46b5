package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/engine"
	"github.com/taskpipe/taskpipe/processors"
	"github.com/taskpipe/taskpipe/server"
	"github.com/taskpipe/taskpipe/store/sqlite"
)

// UpstreamOptions describe the upstream-economy measurement: one group run
// through the parallel processor against a taskpipe server standing in for
// Parallel's API, and the same group sent by the polling pattern of
// Parallel's docs and parallel-web-tools, against the same server.
type UpstreamOptions struct {
	// Dir holds the SQLite files of both engines. Required.
	Dir string
	// Runs is the size of the group (default 10,000).
	Runs int
	// Latency is the synthetic duration of every upstream run (default
	// uniform between 5 and 15 seconds).
	Latency processors.LatencyOptions
	// PollChunk is the polling pattern's runs per add-runs call (default
	// 100, as parallel-web-tools sends).
	PollChunk int
	// PollInterval is the polling pattern's wait between GETs of the
	// group (default 2 s).
	PollInterval time.Duration
}

// UpstreamResult counts the HTTP requests each way sent upstream, by
// endpoint ("POST /v1/tasks/groups/{taskgroup_id}/runs", ...).
type UpstreamResult struct {
	Runs                       int
	Forwarded, Polling         map[string]int64
	ForwardedWall, PollingWall time.Duration
}

// String formats the comparison as a table.
func (r UpstreamResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d runs; forwarded in %s, polling pattern in %s\n",
		r.Runs, r.ForwardedWall.Round(time.Millisecond), r.PollingWall.Round(time.Millisecond))
	fmt.Fprintf(&b, "%-52s %9s %9s\n", "endpoint", "parallel", "polling")
	var keys []string
	for k := range r.Forwarded {
		keys = append(keys, k)
	}
	for k := range r.Polling {
		if !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var ft, pt int64
	for _, k := range keys {
		fmt.Fprintf(&b, "%-52s %9d %9d\n", k, r.Forwarded[k], r.Polling[k])
		ft += r.Forwarded[k]
		pt += r.Polling[k]
	}
	fmt.Fprintf(&b, "%-52s %9d %9d", "total", ft, pt)
	return b.String()
}

// Upstream runs the measurement.
func Upstream(ctx context.Context, o UpstreamOptions) (UpstreamResult, error) {
	if o.Dir == "" {
		return UpstreamResult{}, errors.New("upstream bench: a directory is required")
	}
	if o.Runs <= 0 {
		o.Runs = 10000
	}
	if o.Latency.Distribution == "" {
		o.Latency = processors.LatencyOptions{Distribution: processors.LatencyUniform,
			Min: 5 * time.Second, Max: 15 * time.Second}
	}
	if o.PollChunk <= 0 {
		o.PollChunk = 100
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 2 * time.Second
	}
	res := UpstreamResult{Runs: o.Runs}

	// Start the upstream server on 127.0.0.1.
	url, stop, err := startUpstreamServer(ctx, o)
	if err != nil {
		return res, err
	}
	defer stop()

	// Forward a group through the parallel processor.
	start := time.Now()
	res.Forwarded, err = forwardGroup(ctx, url, o)
	if err != nil {
		return res, fmt.Errorf("forward group: %w", err)
	}
	res.ForwardedWall = time.Since(start)

	// Send the same group the polling way.
	start = time.Now()
	client := api.NewClient(url, "")
	if err := pollGroup(ctx, client, o); err != nil {
		return res, fmt.Errorf("polling pattern: %w", err)
	}
	res.Polling = client.RequestCounts()
	res.PollingWall = time.Since(start)
	return res, nil
}

// startUpstreamServer serves an engine whose "core" processor is synthetic
// with o.Latency, in development mode.
func startUpstreamServer(ctx context.Context, o UpstreamOptions) (string, func(), error) {
	st, err := sqlite.Open(ctx, filepath.Join(o.Dir, "upstream.db"))
	if err != nil {
		return "", nil, fmt.Errorf("open upstream store: %w", err)
	}
	synth, err := processors.NewSynthetic(processors.SyntheticOptions{Latency: o.Latency})
	if err != nil {
		st.Close()
		return "", nil, err
	}
	eng, err := engine.New(engine.Options{Store: st, Node: "upstream", Backends: map[string]engine.Backend{
		"core": {Processor: synth, Concurrency: 2 * o.Runs, Timeout: time.Hour},
	}})
	if err == nil {
		err = eng.Start(ctx)
	}
	if err != nil {
		st.Close()
		return "", nil, fmt.Errorf("start upstream engine: %w", err)
	}
	srv, err := server.New(server.Options{Service: eng, WithOwner: engine.WithOwner})
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("listen: %w", err)
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(sctx, ln, 5*time.Second)
	}()
	stop := func() {
		cancel()
		<-served
		_ = eng.Stop(context.Background())
		_ = st.Close()
	}
	return "http://" + ln.Addr().String(), stop, nil
}

// forwardGroup runs o.Runs runs on a downstream engine whose "core"
// processor is the parallel kind pointed at url, and returns the requests
// the processor sent upstream.
func forwardGroup(ctx context.Context, url string, o UpstreamOptions) (map[string]int64, error) {
	// The server runs in development mode: no key is needed.
	opts := processors.ParallelOptions{BaseURL: url, APIKeyEnv: "TASKPIPE_BENCH_NO_KEY"}
	par, err := processors.NewParallel(opts, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	st, err := sqlite.Open(ctx, filepath.Join(o.Dir, "downstream.db"))
	if err != nil {
		return nil, fmt.Errorf("open downstream store: %w", err)
	}
	defer st.Close()
	eng, err := engine.New(engine.Options{Store: st, Node: "downstream", Backends: map[string]engine.Backend{
		"core": {Processor: par, Concurrency: o.Runs, Timeout: time.Hour},
	}})
	if err != nil {
		return nil, err
	}
	if err := eng.Start(ctx); err != nil {
		return nil, err
	}
	defer eng.Stop(context.Background())
	res, err := Group(ctx, eng, GroupOptions{Runs: o.Runs, Chunk: api.MaxRunsPerAdd, Processor: "core"})
	if err != nil {
		return nil, err
	}
	if res.Completed != o.Runs {
		return nil, fmt.Errorf("%d of %d runs completed", res.Completed, o.Runs)
	}
	return par.RequestCounts(), nil
}

// pollGroup is the pattern of Parallel's docs and parallel-web-tools:
// create a group, add the runs in chunks, GET the group every
// PollInterval until it is inactive, then read every run with its input
// and output from the runs stream.
func pollGroup(ctx context.Context, c *api.Client, o UpstreamOptions) error {
	g, err := c.CreateTaskGroup(ctx, api.CreateTaskGroupRequest{})
	if err != nil {
		return err
	}
	for first := 0; first < o.Runs; first += o.PollChunk {
		req := api.TaskGroupRunRequest{DefaultTaskSpec: benchSpec}
		for i := first; i < min(o.Runs, first+o.PollChunk); i++ {
			req.Inputs = append(req.Inputs, api.TaskRunInput{
				Input:     json.RawMessage(`{"company":"Company ` + strconv.Itoa(i) + `"}`),
				Processor: "core",
			})
		}
		if _, err := c.AddRuns(ctx, g.TaskGroupID, req); err != nil {
			return fmt.Errorf("add runs at %d: %w", first, err)
		}
	}
	for {
		st, err := c.GetTaskGroup(ctx, g.TaskGroupID)
		if err != nil {
			return err
		}
		if !st.Status.IsActive {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(o.PollInterval):
		}
	}
	completed := 0
	err = c.GroupRuns(ctx, g.TaskGroupID, api.GroupRunsQuery{IncludeInput: true, IncludeOutput: true},
		func(ev *api.TaskRunEvent) error {
			if ev.Output != nil {
				completed++
			}
			return nil
		})
	if err != nil {
		return err
	}
	if completed != o.Runs {
		return fmt.Errorf("%d of %d runs completed", completed, o.Runs)
	}
	return nil
}
