package processors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/time/rate"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/engine"
)

// ParallelOptions configures the parallel kind: a forwarder to a
// Parallel-compatible Task Group API, Parallel's hosted service
// (https://api.parallel.ai) or another taskpipe server.
type ParallelOptions struct {
	// BaseURL is the API's base URL. Required: there is no default host.
	BaseURL string `yaml:"base_url"`
	// APIKeyEnv names the environment variable holding the API key
	// (default PARALLEL_API_KEY). It is read once, when the processor is
	// built.
	APIKeyEnv string `yaml:"api_key_env"`
	// UpstreamProcessor is the processor the upstream runs use; empty
	// keeps each run's own processor name.
	UpstreamProcessor string `yaml:"upstream_processor"`
	// CreatesPerMinute caps the calls that create upstream resources
	// (add-runs and the rare create-group) per minute (default 2,000,
	// Parallel's published limit). Processors with the same base_url,
	// api_key_env and cap share one limit.
	CreatesPerMinute float64 `yaml:"creates_per_minute"`
	// MaxRunsPerAdd is the most runs one add-runs call carries (default
	// and maximum 1,000).
	MaxRunsPerAdd int `yaml:"max_runs_per_add"`
	// FlushInterval is how long jobs are gathered before a partial
	// add-runs call is sent, and completions before the runs stream is
	// read for their outputs (default 200ms).
	FlushInterval time.Duration `yaml:"flush_interval"`
	// ClientOptions tune the API client (tests use short retry backoffs).
	// They cannot be set in the processor file.
	ClientOptions []api.ClientOption `yaml:"-"`
}

// Defaults of the parallel kind.
const (
	DefaultParallelKeyEnv        = "PARALLEL_API_KEY"
	DefaultParallelBaseURLEnv    = "PARALLEL_BASE_URL"
	DefaultParallelCreatesPerMin = 2000
	DefaultParallelFlushInterval = 200 * time.Millisecond
	// parallelRunKey is the metadata key of an upstream run that holds the
	// engine run it executes, so that a restart can adopt runs whose ids
	// were never checkpointed.
	parallelRunKey = "taskpipe_run"
	// parallelGroupKey is the metadata key of an upstream group that names
	// the engine group it serves.
	parallelGroupKey = "taskpipe_group"
	// parallelAttempts bounds the tries of one add-runs batch, one
	// adoption read or one group creation before its runs fail as
	// transient (the engine retries them later).
	parallelAttempts = 6
	// parallelAdders is the most add-runs calls in flight at once.
	parallelAdders = 4
	// parallelEarlyCap bounds the remembered completions of runs not (yet)
	// registered; see upstreamGroup.early.
	parallelEarlyCap = 100_000
	// parallelForgetAfter is how long an engine group with nothing queued
	// or pending upstream is remembered. Runs added to it later go to a
	// new upstream group.
	parallelForgetAfter = 10 * time.Minute
)

// errReadDone stops a runs stream early once it gave what was wanted.
var errReadDone = errors.New("read done")

// Parallel is the processor of the parallel kind. It forwards runs to an
// upstream Task Group API: one upstream group per engine group (created
// lazily), runs added in calls of up to 1,000 within the create rate,
// completions followed on the upstream group's events stream (no polling)
// and outputs read back in batches from the group's runs stream.
//
// Every job is checkpointed with its upstream group before it is added and
// with its upstream run once the add returned, and every upstream run
// carries the engine run id in its metadata (taskpipe_run). A restarted
// engine re-attaches jobs with a run checkpoint and adopts, by metadata,
// runs that were added but not checkpointed, so nothing is submitted twice.
type Parallel struct {
	opts    ParallelOptions
	client  *api.Client
	limiter *rate.Limiter
	log     *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	wakeC  chan struct{}
	adders chan struct{}

	// life guards closed, so that no goroutine starts after Close.
	life   sync.Mutex
	closed bool

	// mu guards locals and upstreams. It may be held while taking an
	// upstreamGroup's lock, never the other way round.
	mu        sync.Mutex
	locals    map[string]*localGroup
	upstreams map[string]*upstreamGroup
}

var (
	_ engine.Processor = (*Parallel)(nil)
	_ engine.Closer    = (*Parallel)(nil)
)

// forwardJob is a job on its way upstream.
type forwardJob struct {
	job engine.Job
	r   engine.Reporter
	// upstreamGroup is the group its checkpoint names ("" for none).
	upstreamGroup string
	queued        time.Time
}

// localGroup is the forwarding state of one engine group ("" for runs
// outside any group).
type localGroup struct {
	key string
	// upstream receives this group's new runs; nil until known.
	upstream *upstreamGroup
	queue    []*forwardJob
	// adopt holds jobs checkpointed with a group but no run: a previous
	// life may have added them.
	adopt []*forwardJob
	busy  bool
	// idleSince is when the group last had nothing to add (zero while it
	// has work); idle groups are forgotten after parallelForgetAfter.
	idleSince time.Time
}

// parallelCheckpoint is what a job saves through Reporter.Checkpoint.
type parallelCheckpoint struct {
	UpstreamGroup string `json:"upstream_group"`
	UpstreamRun   string `json:"upstream_run,omitempty"`
}

// NewParallel checks opts and builds a parallel processor. Nothing
// connects until the first job arrives.
func NewParallel(opts ParallelOptions, log *slog.Logger) (*Parallel, error) {
	// Validate and default the options.
	var errs []error
	u, err := url.Parse(opts.BaseURL)
	switch {
	case opts.BaseURL == "":
		errs = append(errs, errors.New(
			"base_url: must be set (for Parallel's hosted API: https://api.parallel.ai)"))
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		errs = append(errs, fmt.Errorf("base_url: must be an absolute http or https URL, not %q", opts.BaseURL))
	}
	if opts.CreatesPerMinute < 0 {
		errs = append(errs, errors.New("creates_per_minute: must be > 0"))
	}
	if opts.MaxRunsPerAdd < 0 || opts.MaxRunsPerAdd > api.MaxRunsPerAdd {
		errs = append(errs, fmt.Errorf("max_runs_per_add: must be between 1 and %d", api.MaxRunsPerAdd))
	}
	if opts.FlushInterval < 0 {
		errs = append(errs, errors.New("flush_interval: must be >= 0"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if opts.APIKeyEnv == "" {
		opts.APIKeyEnv = DefaultParallelKeyEnv
	}
	if opts.CreatesPerMinute == 0 {
		opts.CreatesPerMinute = DefaultParallelCreatesPerMin
	}
	if opts.MaxRunsPerAdd == 0 {
		opts.MaxRunsPerAdd = api.MaxRunsPerAdd
	}
	if opts.FlushInterval == 0 {
		opts.FlushInterval = DefaultParallelFlushInterval
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	// Build the client; a missing key is sent as none (the upstream then
	// answers 401, which fails the runs with its message).
	key := os.Getenv(opts.APIKeyEnv)
	if key == "" {
		log.Warn("api key variable is not set; sending no key", "variable", opts.APIKeyEnv)
	}
	clientOpts := append([]api.ClientOption{api.WithLogger(log)}, opts.ClientOptions...)
	ctx, cancel := context.WithCancel(context.Background())
	return &Parallel{
		opts:      opts,
		client:    api.NewClient(opts.BaseURL, key, clientOpts...),
		limiter:   createLimiter(opts.BaseURL, opts.APIKeyEnv, opts.CreatesPerMinute),
		log:       log,
		ctx:       ctx,
		cancel:    cancel,
		wakeC:     make(chan struct{}, 1),
		adders:    make(chan struct{}, parallelAdders),
		locals:    make(map[string]*localGroup),
		upstreams: make(map[string]*upstreamGroup),
	}, nil
}

// newParallelKind is the Factory of the parallel kind.
func newParallelKind(options yaml.Node, log *slog.Logger) (engine.Processor, error) {
	var o ParallelOptions
	if err := DecodeOptions(options, &o); err != nil {
		return nil, err
	}
	return NewParallel(o, log)
}

// sharedLimiters holds one create limiter per upstream account and cap.
var sharedLimiters = struct {
	sync.Mutex
	m map[string]*rate.Limiter
}{m: map[string]*rate.Limiter{}}

// createLimiter returns the limiter of creates shared by processors with
// the same base URL, key variable and cap. Its burst is one, so no minute
// sees more than perMinute creates (plus one).
func createLimiter(baseURL, keyEnv string, perMinute float64) *rate.Limiter {
	key := fmt.Sprintf("%s\x00%s\x00%g", baseURL, keyEnv, perMinute)
	sharedLimiters.Lock()
	defer sharedLimiters.Unlock()
	l, ok := sharedLimiters.m[key]
	if !ok {
		l = rate.NewLimiter(rate.Limit(perMinute/60), 1)
		sharedLimiters.m[key] = l
	}
	return l
}

// RequestCounts returns the HTTP requests sent upstream per endpoint,
// retries and stream reconnects included.
func (p *Parallel) RequestCounts() map[string]int64 { return p.client.RequestCounts() }

// Execute implements engine.Processor. Jobs with a run checkpoint are
// re-attached to their upstream run; the others are queued for the next
// add-runs call of their group.
func (p *Parallel) Execute(ctx context.Context, jobs []engine.Job, r engine.Reporter) {
	if !p.startSubmitter() {
		return
	}
	now := time.Now()
	type attachment struct {
		ug  *upstreamGroup
		fj  *forwardJob
		run string
	}
	var attach []attachment

	// Sort the jobs by what their checkpoint says.
	p.mu.Lock()
	for _, j := range jobs {
		fj := &forwardJob{job: j, r: r, queued: now}
		cp := p.checkpointOf(j)
		lg := p.localLocked(j.GroupID)
		if cp.UpstreamGroup != "" {
			ug := p.upstreamLocked(cp.UpstreamGroup)
			if lg.upstream == nil {
				lg.upstream = ug
			}
			fj.upstreamGroup = ug.id
		}
		switch {
		case cp.UpstreamRun != "":
			attach = append(attach, attachment{p.upstreams[cp.UpstreamGroup], fj, cp.UpstreamRun})
		case cp.UpstreamGroup != "":
			lg.adopt = append(lg.adopt, fj)
		default:
			lg.queue = append(lg.queue, fj)
		}
	}
	p.mu.Unlock()

	// Re-attach, then let the submitter look at the queues.
	for _, a := range attach {
		a.ug.mu.Lock()
		a.ug.reattach(a.fj, a.run)
		p.followLocked(a.ug)
		a.ug.mu.Unlock()
	}
	p.wake()
}

// checkpointOf decodes a job's checkpoint; an unreadable one counts as none.
func (p *Parallel) checkpointOf(j engine.Job) parallelCheckpoint {
	var cp parallelCheckpoint
	if len(j.Checkpoint) == 0 {
		return cp
	}
	if err := json.Unmarshal(j.Checkpoint, &cp); err != nil {
		p.log.Warn("ignore unreadable checkpoint", "run_id", j.RunID, "error", err)
		return parallelCheckpoint{}
	}
	if cp.UpstreamGroup == "" {
		cp.UpstreamRun = ""
	}
	return cp
}

// localLocked returns the state of an engine group; p.mu is held.
func (p *Parallel) localLocked(key string) *localGroup {
	lg, ok := p.locals[key]
	if !ok {
		lg = &localGroup{key: key}
		p.locals[key] = lg
	}
	return lg
}

// upstreamLocked returns the state of an upstream group; p.mu is held.
func (p *Parallel) upstreamLocked(id string) *upstreamGroup {
	ug, ok := p.upstreams[id]
	if !ok {
		ug = newUpstreamGroup(id)
		p.upstreams[id] = ug
	}
	return ug
}

// Close implements engine.Closer: it stops the streams and the submitter
// and waits for them. Jobs not yet completed are abandoned; the engine
// runs them again after a restart, re-attached through their checkpoints.
func (p *Parallel) Close() error {
	p.life.Lock()
	p.closed = true
	p.life.Unlock()
	p.cancel()
	p.wg.Wait()
	return nil
}

// goStart runs fn in a tracked goroutine unless Close began; it reports
// whether fn was started.
func (p *Parallel) goStart(fn func()) bool {
	p.life.Lock()
	defer p.life.Unlock()
	if p.closed {
		return false
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		fn()
	}()
	return true
}

// startSubmitter starts the submitter on first use; false after Close.
func (p *Parallel) startSubmitter() bool {
	p.once.Do(func() { p.goStart(p.submitLoop) })
	return p.ctx.Err() == nil
}

// wake nudges the submitter.
func (p *Parallel) wake() {
	select {
	case p.wakeC <- struct{}{}:
	default:
	}
}

// submitLoop starts add-runs work for groups whose queues are due: at once
// for full calls, after FlushInterval for partial ones.
func (p *Parallel) submitLoop() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if next := p.dispatchAdds(time.Now()); next > 0 {
			timer.Reset(next)
		} else {
			timer.Stop()
		}
		select {
		case <-p.ctx.Done():
			return
		case <-p.wakeC:
		case <-timer.C:
		}
	}
}

// dispatchAdds hands due queues to workers, one worker per engine group at
// a time so that a group's add calls keep their order. It returns how long
// until the next partial queue is due (0: none waiting).
func (p *Parallel) dispatchAdds(now time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var next time.Duration
	for key, lg := range p.locals {
		if lg.busy {
			continue
		}
		if len(lg.queue) == 0 && len(lg.adopt) == 0 {
			if lg.idleSince.IsZero() {
				lg.idleSince = now
			} else if now.Sub(lg.idleSince) > parallelForgetAfter && p.forgetLocked(lg) {
				delete(p.locals, key)
			}
			continue
		}
		lg.idleSince = time.Time{}
		oldest := now
		for _, fj := range slices.Concat(lg.queue, lg.adopt) {
			if fj.queued.Before(oldest) {
				oldest = fj.queued
			}
		}
		due := !now.Before(oldest.Add(p.opts.FlushInterval))
		if !due && len(lg.queue) < p.opts.MaxRunsPerAdd {
			if wait := oldest.Add(p.opts.FlushInterval).Sub(now); next == 0 || wait < next {
				next = wait
			}
			continue
		}

		// Take full calls now, and the rest (with adoptions) once due.
		var jobs, adopt []*forwardJob
		if due {
			jobs, adopt = lg.queue, lg.adopt
			lg.queue, lg.adopt = nil, nil
		} else {
			n := len(lg.queue) / p.opts.MaxRunsPerAdd * p.opts.MaxRunsPerAdd
			jobs = lg.queue[:n:n]
			lg.queue = slices.Clone(lg.queue[n:])
		}
		lg.busy = true
		if !p.goStart(func() { p.work(lg, jobs, adopt) }) {
			lg.busy = false
		}
	}
	return next
}

// forgetLocked drops an idle engine group's upstream group when nothing
// is pending there, and reports whether it did (or had none); p.mu is held.
func (p *Parallel) forgetLocked(lg *localGroup) bool {
	ug := lg.upstream
	if ug == nil {
		return true
	}
	ug.mu.Lock()
	idle := len(ug.pending) == 0 && !ug.following && !ug.reading
	ug.mu.Unlock()
	if idle {
		delete(p.upstreams, ug.id)
	}
	return idle
}

// work adopts what a previous life added, then adds the rest of the jobs
// of one engine group, in calls of at most MaxRunsPerAdd.
func (p *Parallel) work(lg *localGroup, jobs, adopt []*forwardJob) {
	defer func() {
		p.mu.Lock()
		lg.busy = false
		p.mu.Unlock()
		p.wake()
	}()
	select {
	case p.adders <- struct{}{}:
		defer func() { <-p.adders }()
	case <-p.ctx.Done():
		return
	}

	// Adopt, per upstream group, runs that exist already.
	byGroup := map[string][]*forwardJob{}
	for _, fj := range adopt {
		byGroup[fj.upstreamGroup] = append(byGroup[fj.upstreamGroup], fj)
	}
	for id, fjs := range byGroup {
		p.mu.Lock()
		ug := p.upstreams[id]
		p.mu.Unlock()
		rest, ok := p.adoptWithRetry(ug, fjs, false)
		if !ok {
			return
		}
		jobs = append(rest, jobs...)
	}

	// Add the rest.
	for chunk := range slices.Chunk(jobs, p.opts.MaxRunsPerAdd) {
		if p.ctx.Err() != nil {
			return
		}
		p.addChunk(lg, chunk)
	}
}

// parallelTimeouts is the attempt timeout of the processors mapped by
// parallelDefaults: Parallel's slowest published latency with room for
// queueing upstream.
var parallelTimeouts = map[string]time.Duration{
	"lite": time.Hour, "base": time.Hour, "core": time.Hour, "core2x": time.Hour,
	"pro": 3 * time.Hour, "ultra": 3 * time.Hour, "ultra2x": 3 * time.Hour,
	"ultra4x": 4 * time.Hour, "ultra8x": 6 * time.Hour,
}

// parallelDefaultConcurrency is how many runs a mapped processor keeps
// upstream at once.
const parallelDefaultConcurrency = 5000

// addParallelDefaults maps Parallel's processor names (lite ... ultra8x and
// their -fast variants) that the file does not define to the parallel
// kind, priced from DefaultPrices, when PARALLEL_API_KEY is set. The base
// URL comes from PARALLEL_BASE_URL or else from the file's first parallel
// entry that reads PARALLEL_API_KEY; without one nothing is mapped, since
// taskpipe never picks a remote host on its own.
func addParallelDefaults(cfg fileConfig, backends map[string]engine.Backend, log *slog.Logger) error {
	if os.Getenv(DefaultParallelKeyEnv) == "" {
		return nil
	}

	// Find the base URL.
	base := os.Getenv(DefaultParallelBaseURLEnv)
	names := make([]string, 0, len(cfg.Processors))
	for name := range cfg.Processors {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		pc := cfg.Processors[name]
		if base != "" || pc.Kind != "parallel" {
			continue
		}
		var o ParallelOptions
		if DecodeOptions(pc.Options, &o) == nil &&
			(o.APIKeyEnv == "" || o.APIKeyEnv == DefaultParallelKeyEnv) {
			base = o.BaseURL
		}
	}
	if base == "" {
		log.Info("PARALLEL_API_KEY is set but no base URL is configured; Parallel's processor names are not mapped",
			"hint", "set "+DefaultParallelBaseURLEnv+"=https://api.parallel.ai")
		return nil
	}

	// Map every name the file leaves out.
	var errs []error
	for name, price := range DefaultPrices {
		if _, ok := cfg.Processors[name]; ok {
			continue
		}
		p, err := NewParallel(ParallelOptions{BaseURL: base, UpstreamProcessor: name},
			log.With("processor", name))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", DefaultParallelBaseURLEnv, err))
			break
		}
		timeout := parallelTimeouts[strings.TrimSuffix(name, "-fast")]
		backends[name] = engine.Backend{
			Processor:   p,
			Concurrency: parallelDefaultConcurrency,
			Timeout:     timeout,
			MaxAttempts: DefaultMaxAttempts,
			PricePerRun: price,
			CacheMaxAge: DefaultCacheMaxAge,
		}
	}
	return errors.Join(errs...)
}
