// Package server is the HTTP face of taskpipe: it serves Parallel's Task and
// Task Group API (under /v1 and /v1beta) over a Service, with Server-Sent
// Events streams, API-key authentication, one error shape for every
// failure, request logs and Prometheus metrics.
//
// The package holds no task state of its own: every call goes to the
// Service (the engine) acting for the owner of the request's API key.
package server

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/taskpipe/taskpipe/api"
)

// Service is what the server needs of the engine: the Task and Task Group
// calls, the taskpipe extensions and a readiness check. *engine.Engine
// satisfies it. Every call acts for the owner in its context
// (engine.WithOwner); another owner's groups and runs are ErrNotFound.
// Errors are *api.Error values whose kind picks the HTTP status.
type Service interface {
	api.TaskGroups
	api.TaskRuns
	// GetGroupRun returns a run of a group; ErrNotFound when the run is in
	// another group or none.
	GetGroupRun(ctx context.Context, groupID, runID string) (api.TaskRun, error)
	// CancelRun cancels a run and returns its status.
	CancelRun(ctx context.Context, runID string) (api.TaskRun, error)
	// CancelGroup cancels the active runs of a group and returns its status.
	CancelGroup(ctx context.Context, groupID string) (api.TaskGroup, error)
	// Ready returns nil when the service can take requests.
	Ready(ctx context.Context) error
}

// Defaults of Options.
const (
	DefaultKeepalive          = 15 * time.Second
	DefaultMaxBody            = 32 << 20
	DefaultStreamWriteTimeout = time.Minute
	// DefaultResultTimeout is the wait of the result endpoint without a
	// timeout query, as in Parallel's API.
	DefaultResultTimeout = 600 * time.Second
	// MaxResultTimeout caps the result endpoint's timeout query.
	MaxResultTimeout = time.Hour
	// RunStreamLimit is the longest a run's own event stream stays open,
	// as in Parallel's API; a client reconnects to continue.
	RunStreamLimit = 570 * time.Second
)

// Options configure a Server.
type Options struct {
	// Service executes the calls. Required.
	Service Service
	// WithOwner returns a context in which Service calls act for owner:
	// engine.WithOwner for the engine. Required. (It is passed in, rather
	// than imported, so the HTTP layer depends on the engine only through
	// Service.)
	WithOwner func(ctx context.Context, owner string) context.Context
	// Keys authenticates API keys. With no keys (nil or empty), or with
	// Dev set, the server runs in development mode: any key, or none, is
	// accepted and acts as the owner "dev".
	Keys *Keyring
	// Dev forces development mode even when keys are configured.
	Dev bool
	// Logger receives request logs and errors. Default: discard.
	Logger *slog.Logger
	// Registry receives the HTTP metrics and is served on /metrics; the
	// engine registers its own metrics on the same registry. Default: a new
	// registry.
	Registry *prometheus.Registry
	// Keepalive is the idle time after which a stream sends a `: keepalive`
	// comment. Default DefaultKeepalive.
	Keepalive time.Duration
	// MaxBody limits the size of request bodies in bytes. Default
	// DefaultMaxBody.
	MaxBody int64
	// StreamWriteTimeout bounds one write to a stream; a client that does
	// not take an event within it is disconnected. Default
	// DefaultStreamWriteTimeout.
	StreamWriteTimeout time.Duration
}

// DevOwner is the owner of every request in development mode.
const DevOwner = "dev"

// Server is the http.Handler of the API. Create it with New.
type Server struct {
	svc          Service
	withOwner    func(context.Context, string) context.Context
	keys         *Keyring
	dev          bool
	log          *slog.Logger
	registry     *prometheus.Registry
	metrics      *metrics
	keepalive    time.Duration
	maxBody      int64
	writeTimeout time.Duration
	handler      http.Handler

	// closeCtx is cancelled by CloseStreams; streams and long polls end.
	closeCtx    context.Context
	closeCancel context.CancelFunc
}

// New returns a Server over opts.Service.
func New(opts Options) (*Server, error) {
	if opts.Service == nil {
		return nil, errors.New("new server: no service")
	}
	if opts.WithOwner == nil {
		return nil, errors.New("new server: no WithOwner function")
	}
	s := &Server{
		svc:          opts.Service,
		withOwner:    opts.WithOwner,
		keys:         opts.Keys,
		dev:          opts.Dev || opts.Keys.Len() == 0,
		log:          opts.Logger,
		registry:     opts.Registry,
		keepalive:    opts.Keepalive,
		maxBody:      opts.MaxBody,
		writeTimeout: opts.StreamWriteTimeout,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.registry == nil {
		s.registry = prometheus.NewRegistry()
	}
	if s.keepalive <= 0 {
		s.keepalive = DefaultKeepalive
	}
	if s.maxBody <= 0 {
		s.maxBody = DefaultMaxBody
	}
	if s.writeTimeout <= 0 {
		s.writeTimeout = DefaultStreamWriteTimeout
	}
	m, err := newMetrics(s.registry)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	s.closeCtx, s.closeCancel = context.WithCancel(context.Background())
	s.handler = s.observe(s.routes())
	return s, nil
}

// DevMode reports whether the server accepts any API key.
func (s *Server) DevMode() bool { return s.dev }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.handler.ServeHTTP(w, r)
}

// CloseStreams ends every open event stream (after flushing what was
// written) and every waiting result call (with 503, which clients retry).
// It is called when a graceful shutdown starts; later streams end at once.
func (s *Server) CloseStreams() { s.closeCancel() }

// closing reports whether CloseStreams was called.
func (s *Server) closing() bool { return s.closeCtx.Err() != nil }

// longContext returns the context of a call that may wait a long time: it
// ends when the client goes away or the server closes its streams.
func (s *Server) longContext(r *http.Request) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(s.closeCtx, cancel)
	return ctx, func() { stop(); cancel() }
}

// routes builds the mux: every endpoint of the API under /v1, the group
// endpoints and run events also under /v1beta, the taskpipe extensions and
// the operational endpoints.
func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	for _, p := range []string{"/v1", "/v1beta"} {
		mux.Handle("POST "+p+"/tasks/groups", s.authed(s.createGroup))
		mux.Handle("GET "+p+"/tasks/groups/{taskgroup_id}", s.authed(s.getGroup))
		mux.Handle("POST "+p+"/tasks/groups/{taskgroup_id}/runs", s.authed(s.addRuns))
		mux.Handle("GET "+p+"/tasks/groups/{taskgroup_id}/runs", s.authed(s.groupRuns))
		mux.Handle("GET "+p+"/tasks/groups/{taskgroup_id}/events", s.authed(s.groupEvents))
		mux.Handle("GET "+p+"/tasks/groups/{taskgroup_id}/runs/{run_id}", s.authed(s.getGroupRun))
		mux.Handle("POST "+p+"/tasks/groups/{taskgroup_id}/cancel", s.authed(s.cancelGroup))
		mux.Handle("GET "+p+"/tasks/runs/{run_id}/events", s.authed(s.runEvents))
	}
	mux.Handle("POST /v1/tasks/runs", s.authed(s.createRun))
	mux.Handle("GET /v1/tasks/runs/{run_id}", s.authed(s.getRun))
	mux.Handle("GET /v1/tasks/runs/{run_id}/input", s.authed(s.getRunInput))
	mux.Handle("GET /v1/tasks/runs/{run_id}/result", s.authed(s.getRunResult))
	mux.Handle("POST /v1/tasks/runs/{run_id}/cancel", s.authed(s.cancelRun))

	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", s.metricsHandler())
	mux.HandleFunc("/", s.notFound)
	return mux
}

// notFound answers paths and methods the API does not have.
func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	s.writeError(w, r, api.Errorf(api.ErrNotFound, "no endpoint %s %s", r.Method, r.URL.Path))
}

// healthz reports that the process is up.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz reports whether the engine can take requests.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.closing() {
		s.writeError(w, r, errShuttingDown)
		return
	}
	if err := s.svc.Ready(r.Context()); err != nil {
		s.writeError(w, r, api.Errorf(api.ErrUnavailable, "not ready: %v", err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}
