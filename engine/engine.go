// Package engine runs task groups: it accepts runs, keeps their state in a
// store.Store, schedules them onto processors within each processor's
// concurrency and rate limits, retries transient failures, validates
// outputs, appends the group event log and fans events out to subscribers.
//
// The engine implements api.TaskGroups and api.TaskRuns, so code written
// against those interfaces runs unchanged in-process or against a remote
// server through api.Client. Calls act on behalf of the owner carried in the
// context (WithOwner); groups and runs of another owner are not found.
//
// Execution is at-least-once: a run that was executing when its node died is
// executed again after recovery. Recorded results are exactly-once: a
// terminal run is never executed again nor overwritten.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/store"
)

// Backend is a configured processor: the implementation and the limits the
// engine enforces around it.
type Backend struct {
	Processor Processor
	// Concurrency is the most runs executing at once (default 16).
	Concurrency int
	// RatePerMinute caps how many runs start per minute (0: no cap).
	RatePerMinute float64
	// Timeout is the per-run deadline of one attempt (default 10 min).
	Timeout time.Duration
	// MaxAttempts bounds executions of a run on transient errors
	// (default 3).
	MaxAttempts int
	// PricePerRun is the cost of one run in US dollars, for budgets.
	PricePerRun float64
	// CacheMaxAge, when positive, serves a run from the result of an
	// identical earlier run (same processor, task spec, input and source
	// policy) that completed within this age, without executing it. The run
	// is marked cached. Zero turns the cache off.
	CacheMaxAge time.Duration
}

func (b Backend) withDefaults() Backend {
	if b.Concurrency <= 0 {
		b.Concurrency = 16
	}
	if b.Timeout <= 0 {
		b.Timeout = 10 * time.Minute
	}
	if b.MaxAttempts <= 0 {
		b.MaxAttempts = 3
	}
	return b
}

// Options configure an Engine.
type Options struct {
	// Store keeps all durable state. Required.
	Store store.Store
	// Backends maps processor names (the "processor" field of runs) to
	// their implementations. Required, at least one.
	Backends map[string]Backend
	// Node names this engine among the nodes sharing a store; runs it
	// leases carry the name so that a restart recovers them. Default: the
	// host name.
	Node string
	// Logger receives the engine's logs. Default: discard.
	Logger *slog.Logger
	// Metrics, when set, receives the engine's Prometheus collectors.
	Metrics prometheus.Registerer
	// MaxGroupCost, when positive, caps what the runs of one task group
	// may cost in US dollars (the sum of their processors' PricePerRun);
	// adding runs beyond it is refused with api.ErrPaymentRequired. A group
	// may set a lower cap with the metadata key api.MetadataMaxCost.
	MaxGroupCost float64
	// WebhookSecret signs webhook deliveries (Standard Webhooks); empty
	// disables signing.
	WebhookSecret string
	// PollInterval bounds how long a stream or dispatcher waits before
	// looking at the store again when no local signal came (changes made
	// by other nodes). Default 1 s.
	PollInterval time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Paused makes the engine accept and store runs but execute none: for
	// a process that only submits and exits (taskpipe run --no-wait on the
	// embedded engine), leaving execution to the next engine started on
	// the same store, so that no run is started only to be abandoned.
	Paused bool
}

// ErrStopped is returned by calls that submit work after Stop began.
var ErrStopped = api.Errorf(api.ErrUnavailable, "engine is shutting down")

// Engine executes task groups. Create it with New, then Start it.
type Engine struct {
	store    store.Store
	backends map[string]Backend
	maxCost  float64
	node     string
	log      *slog.Logger
	now      func() time.Time
	poll     time.Duration
	paused   bool
	metrics  *metrics

	hub       *hub
	progress  progressLog
	validator *validator
	recorder  *recorder
	webhooks  *webhookSender

	dispatchers map[string]*dispatcher

	mu       sync.Mutex
	started  bool
	stopping atomic.Bool
	// workCtx is cancelled at the end of Stop, abandoning running jobs.
	workCtx    context.Context
	workCancel context.CancelFunc
	wg         sync.WaitGroup
}

// New checks opts and builds an engine; nothing runs until Start.
func New(opts Options) (*Engine, error) {
	if opts.Store == nil {
		return nil, errors.New("engine: a store is required")
	}
	if len(opts.Backends) == 0 {
		return nil, errors.New("engine: at least one processor backend is required")
	}
	if opts.Node == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "local"
		}
		opts.Node = host
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	e := &Engine{
		store:       opts.Store,
		backends:    make(map[string]Backend, len(opts.Backends)),
		maxCost:     opts.MaxGroupCost,
		node:        opts.Node,
		log:         opts.Logger,
		now:         opts.Now,
		poll:        opts.PollInterval,
		paused:      opts.Paused,
		hub:         newHub(),
		validator:   newValidator(),
		dispatchers: make(map[string]*dispatcher),
	}
	for name, b := range opts.Backends {
		if b.Processor == nil {
			return nil, fmt.Errorf("engine: processor %q has no implementation", name)
		}
		e.backends[name] = b.withDefaults()
	}
	m, err := newMetrics(opts.Metrics, opts.Store)
	if err != nil {
		return nil, fmt.Errorf("engine: register metrics: %w", err)
	}
	e.metrics = m
	e.recorder = newRecorder(e)
	e.webhooks = newWebhookSender(e, opts.WebhookSecret)
	for name, b := range e.backends {
		e.dispatchers[name] = newDispatcher(e, name, b)
	}
	return e, nil
}

// Start recovers runs this node left running before a restart and starts
// the dispatchers, the recorder and the webhook sender. It returns once they
// run; they stop with Stop.
func (e *Engine) Start(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.started {
		return errors.New("engine: already started")
	}

	// Requeue what this node was executing when it died.
	n, events, err := e.store.Recover(ctx, e.node, e.now())
	if err != nil {
		return fmt.Errorf("recover runs: %w", err)
	}
	if n > 0 {
		e.log.Info("recovered runs", "runs", n, "node", e.node)
	}
	e.hub.publish(events)

	// Start the long-lived workers.
	e.workCtx, e.workCancel = context.WithCancel(context.WithoutCancel(ctx))
	e.recorder.start(&e.wg)
	e.webhooks.start(e.workCtx, &e.wg)
	if !e.paused {
		for _, d := range e.dispatchers {
			d.start(e.workCtx, &e.wg)
		}
	}
	e.wg.Add(1)
	go e.recoverLoop(e.workCtx)
	e.started = true
	return nil
}

// recoverLoop periodically requeues runs whose lease expired on any node:
// the way work held by a node that died is picked up by the others.
func (e *Engine) recoverLoop(ctx context.Context) {
	defer e.wg.Done()
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n, events, err := e.store.Recover(ctx, "", e.now())
			if err != nil {
				if ctx.Err() == nil {
					e.log.Warn("recover expired leases", "error", err)
				}
				continue
			}
			if n > 0 {
				e.log.Info("requeued runs with expired leases", "runs", n)
				e.hub.publish(events)
				e.wakeAll()
			}
		}
	}
}

// Stop stops intake, lets running jobs finish until ctx is done, then
// abandons the rest (they run again after a restart), writes every recorded
// outcome and closes the processors.
func (e *Engine) Stop(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.started {
		return nil
	}
	e.stopping.Store(true)

	// Stop claiming, then wait for in-flight jobs to drain.
	for _, d := range e.dispatchers {
		d.stopClaiming()
	}
	for _, d := range e.dispatchers {
		d.drain(ctx)
	}

	// Abandon what is left, stop the workers, flush outcomes.
	e.workCancel()
	e.recorder.stop()
	e.wg.Wait()
	e.hub.closeAll()

	var errs []error
	for name, b := range e.backends {
		if c, ok := b.Processor.(Closer); ok {
			if err := c.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close processor %q: %w", name, err))
			}
		}
	}
	e.started = false
	return errors.Join(errs...)
}

// Ready reports whether the engine accepts work: started, not stopping, and
// its store answering.
func (e *Engine) Ready(ctx context.Context) error {
	e.mu.Lock()
	started := e.started
	e.mu.Unlock()
	if !started || e.stopping.Load() {
		return ErrStopped
	}
	if _, err := e.store.GetGroup(ctx, "readiness-probe"); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

// Processors lists the configured processor names.
func (e *Engine) Processors() []string {
	names := make([]string, 0, len(e.backends))
	for n := range e.backends {
		names = append(names, n)
	}
	return names
}

// wakeAll nudges every dispatcher to look for claimable runs.
func (e *Engine) wakeAll() {
	for _, d := range e.dispatchers {
		d.wake()
	}
}

type ownerKey struct{}

// WithOwner returns a context whose calls act on behalf of owner (an API
// key's identity). The empty owner is the embedded default.
func WithOwner(ctx context.Context, owner string) context.Context {
	return context.WithValue(ctx, ownerKey{}, owner)
}

// OwnerFrom returns the owner carried by ctx.
func OwnerFrom(ctx context.Context) string {
	o, _ := ctx.Value(ownerKey{}).(string)
	return o
}
