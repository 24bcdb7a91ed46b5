package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/engine"
	"github.com/taskpipe/taskpipe/specs"
	"github.com/taskpipe/taskpipe/store/sqlite"
)

// ParallelBaseURL is the base URL of Parallel's hosted API, used by the
// parallel target when the spec gives no URL.
const ParallelBaseURL = "https://api.parallel.ai"

// embeddedNode names the in-process engine in its store, the same on every
// run, so that a restarted pipeline recovers the runs a killed one left
// executing.
const embeddedNode = "taskpipe-embedded"

// ErrUnreachable marks errors reaching the target (a server that does not
// answer, a missing API key).
var ErrUnreachable = errors.New("target unreachable")

// Target is an open connection to where task groups run.
type Target struct {
	// Groups is the task group API of the target.
	Groups api.TaskGroups
	// Runs is the run API of the target.
	Runs api.TaskRuns
	// ID identifies the target in the state store, e.g. "embedded" or
	// "server http://127.0.0.1:8080".
	ID     string
	close  func(context.Context) error
	engine *engine.Engine
}

// TargetOptions configure OpenTarget.
type TargetOptions struct {
	// StateDir holds the embedded engine's store (engine.db).
	StateDir string
	// Backends are the embedded engine's processors.
	Backends map[string]engine.Backend
	// URL and APIKey override the spec's server URL and key.
	URL, APIKey string
	// Observe opens an embedded engine without starting it: it reads
	// groups and follows their events (another process executes the
	// runs) and recovers nothing.
	Observe bool
	// NoExecute starts an embedded engine that stores runs but executes
	// none (taskpipe run --no-wait): the process exits right after
	// submitting, and the next run or wait on the state executes them.
	NoExecute bool
	Logger    *slog.Logger
}

// OpenTarget opens the target a pipeline spec names: an in-process engine
// whose SQLite store lives in the state directory, a taskpipe server, or
// Parallel's hosted API.
func OpenTarget(ctx context.Context, t specs.Target, o TargetOptions) (*Target, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	switch t.Engine {
	case specs.EngineEmbedded, "":
		return openEmbedded(ctx, o, log)
	case specs.EngineServer, specs.EngineParallel:
		url := targetURL(t, o.URL)
		if url == "" {
			return nil, errors.New("target.url: required for a server target")
		}
		key := o.APIKey
		if key == "" && t.APIKeyEnv != "" {
			key = os.Getenv(t.APIKeyEnv)
		}
		if key == "" && t.Engine == specs.EngineParallel {
			return nil, fmt.Errorf("target: %w: no API key in $%s", ErrUnreachable, t.APIKeyEnv)
		}
		c := api.NewClient(url, key, api.WithLogger(log))
		return &Target{Groups: c, Runs: c, ID: TargetID(t, o.URL),
			close: func(context.Context) error { return nil }}, nil
	}
	return nil, fmt.Errorf("target.engine: must be embedded, server or parallel, not %q", t.Engine)
}

// embeddedCacheKiB is the page cache of an embedded engine's write
// connection; each of its read connections gets a quarter.
const embeddedCacheKiB = 32 << 10

// openEmbedded starts an engine over the SQLite store in the state dir. The
// caller holds the state dir's lock (LockState) unless o.Observe is set.
func openEmbedded(ctx context.Context, o TargetOptions, log *slog.Logger) (*Target, error) {
	if err := os.MkdirAll(o.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	// The pipeline reads the group through two streams at most (runs and
	// events), and its writes append: a smaller cache than a server's
	// leaves more of the run's memory budget to DuckDB.
	st, err := sqlite.Open(ctx, filepath.Join(o.StateDir, "engine.db"),
		sqlite.WithReadConns(2), sqlite.WithCacheSize(embeddedCacheKiB))
	if err != nil {
		return nil, fmt.Errorf("open embedded engine store: %w", err)
	}
	e, err := engine.New(engine.Options{Store: st, Backends: o.Backends, Node: embeddedNode,
		Logger: log.With("component", "engine"), Paused: o.NoExecute})
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("make embedded engine: %w", err)
	}
	if o.Observe {
		return &Target{Groups: e, Runs: e, ID: "embedded", engine: e, close: func(context.Context) error {
			return st.Close()
		}}, nil
	}
	if err := e.Start(ctx); err != nil {
		st.Close()
		return nil, fmt.Errorf("start embedded engine: %w", err)
	}
	return &Target{Groups: e, Runs: e, ID: "embedded", engine: e, close: func(ctx context.Context) error {
		err := e.Stop(ctx)
		return errors.Join(err, st.Close())
	}}, nil
}

// Engine returns the in-process engine of an embedded target, else nil.
func (t *Target) Engine() *engine.Engine { return t.engine }

// Close stops an embedded engine and releases the target. Runs still
// executing get two seconds to finish; the others are abandoned and run
// again when an engine next starts on the same state (execution is
// at-least-once; a run that completed is never run again).
func (t *Target) Close(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	return t.close(ctx)
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// TargetID is the ID that OpenTarget gives the target t, with url
// overriding t.URL; the state store keeps one task group per target ID.
func TargetID(t specs.Target, url string) string {
	if t.Engine == specs.EngineEmbedded || t.Engine == "" {
		return "embedded"
	}
	return t.Engine + " " + targetURL(t, url)
}

// targetURL is the base URL of a server or Parallel target: url, else
// t.URL, else Parallel's for a parallel target.
func targetURL(t specs.Target, url string) string {
	url = firstNonEmpty(url, t.URL)
	if url == "" && t.Engine == specs.EngineParallel {
		url = ParallelBaseURL
	}
	return url
}
