package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/taskpipe/taskpipe/engine"
	"github.com/taskpipe/taskpipe/processors"
	"github.com/taskpipe/taskpipe/server"
	"github.com/taskpipe/taskpipe/store/sqlite"
)

// serveCmd is the `taskpipe serve` command: the Task Group API server.
// It wires the SQLite store, the processor backends, the engine and the
// HTTP server, and shuts them down in that reverse order on SIGINT or
// SIGTERM.
type serveCmd struct {
	Addr            string        `help:"Address to listen on (host:port)." default:"127.0.0.1:8080" env:"TASKPIPE_ADDR"`
	DB              string        `name:"db" help:"SQLite file holding the engine's state (created if missing)." default:"./taskpipe.db" env:"TASKPIPE_DB" type:"path"`
	Processors      string        `help:"Processor config file (YAML); default: the embedded synthetic processor." env:"TASKPIPE_PROCESSORS" type:"path"`
	Keys            string        `help:"API keys file (YAML: keys: [{name, key_sha256 | key_env}]). Keys also come from TASKPIPE_API_KEYS (name:key,...)." env:"TASKPIPE_KEYS_FILE" type:"path"`
	Dev             bool          `help:"Development mode: accept any API key (or none) as owner \"dev\". Also on when no keys are configured." env:"TASKPIPE_DEV"`
	Node            string        `help:"Node id of this engine among nodes sharing a store (default: host name)." env:"TASKPIPE_NODE"`
	ShutdownTimeout time.Duration `help:"How long a shutdown waits for requests and running work before cancelling them." default:"30s" env:"TASKPIPE_SHUTDOWN_TIMEOUT"`
	Keepalive       time.Duration `help:"Idle time after which an event stream sends a keep-alive comment." default:"15s" env:"TASKPIPE_KEEPALIVE"`
	MaxBody         int64         `help:"Largest request body in bytes; the default fits an add-runs call of 1,000 inputs at the 25,000-character limit of spec and input." default:"33554432" env:"TASKPIPE_MAX_BODY"`
	MaxGroupCost    float64       `help:"Most the runs of one task group may cost in US dollars (sum of price_per_run); 0: no cap. A group's metadata max_cost_usd may set a lower one." default:"0" env:"TASKPIPE_MAX_GROUP_COST"`
	WebhookSecret   string        `help:"Secret that signs webhook deliveries (Standard Webhooks; whsec_<base64> or raw); empty sends them unsigned." env:"TASKPIPE_WEBHOOK_SECRET"`
}

// Run executes the command.
func (c *serveCmd) Run(cli *CLI, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// Check the configuration before opening anything.
	if c.ShutdownTimeout <= 0 || c.Keepalive <= 0 || c.MaxBody <= 0 || c.MaxGroupCost < 0 {
		return withExitCode(exitUsage, errors.New(
			"serve: --shutdown-timeout, --keepalive and --max-body must be positive, --max-group-cost not negative"))
	}
	keys, err := server.LoadKeyring(c.Keys, os.Getenv(server.KeysEnv), os.Getenv)
	if err != nil {
		return withExitCode(exitUsage, fmt.Errorf("serve: load API keys: %w", err))
	}
	backends := processors.Default(log)
	if c.Processors != "" {
		if backends, err = processors.Load(c.Processors, log); err != nil {
			return withExitCode(exitUsage, fmt.Errorf("serve: %w", err))
		}
	}

	// Open the store and start the engine.
	st, err := sqlite.Open(ctx, c.DB)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	defer st.Close()
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	eng, err := engine.New(engine.Options{Store: st, Backends: backends, Node: c.Node,
		Logger: log, Metrics: registry, MaxGroupCost: c.MaxGroupCost, WebhookSecret: c.WebhookSecret})
	if err != nil {
		return withExitCode(exitUsage, fmt.Errorf("serve: %w", err))
	}
	if err := eng.Start(ctx); err != nil {
		return fmt.Errorf("serve: start engine: %w", err)
	}

	// Serve HTTP until a signal, then drain the engine in what time is left.
	srv, err := server.New(server.Options{Service: eng, WithOwner: engine.WithOwner, Keys: keys,
		Dev: c.Dev, Logger: log, Registry: registry, Keepalive: c.Keepalive, MaxBody: c.MaxBody})
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if srv.DevMode() {
		log.Warn("development mode: any API key is accepted as owner \"dev\"; " +
			"configure --keys or TASKPIPE_API_KEYS before exposing this server")
	}
	ln, err := net.Listen("tcp", c.Addr)
	if err != nil {
		_ = eng.Stop(context.Background())
		return withExitCode(exitUsage, fmt.Errorf("serve: listen: %w", err))
	}
	log.Info("listening", "addr", ln.Addr().String(), "db", c.DB, "keys", keys.Len(),
		"processors", len(backends))
	signalled := make(chan time.Time, 1)
	context.AfterFunc(ctx, func() { signalled <- time.Now() })
	serveErr := srv.Serve(ctx, ln, c.ShutdownTimeout)
	deadline := time.Now().Add(c.ShutdownTimeout)
	select {
	case at := <-signalled:
		deadline = at.Add(c.ShutdownTimeout)
	default:
	}
	drainCtx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	stopErr := eng.Stop(drainCtx)
	log.Info("stopped")
	return errors.Join(serveErr, stopErr)
}
