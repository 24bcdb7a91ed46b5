package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/engine"
	"github.com/taskpipe/taskpipe/server"
	"github.com/taskpipe/taskpipe/store/sqlite"
)

// Local is an engine on a fresh SQLite file, optionally served over HTTP on
// 127.0.0.1, for measurements.
type Local struct {
	// Groups is the engine itself, or an HTTP client of the server.
	Groups api.TaskGroups
	// Client is the HTTP client when served over HTTP, else nil.
	Client *api.Client

	engine *engine.Engine
	store  *sqlite.Store
	http   *http.Server
}

// StartLocal starts an engine with backends, its database in dir. With
// overHTTP the engine is served on a loopback port and Groups is a client.
func StartLocal(ctx context.Context, dir string, backends map[string]engine.Backend, overHTTP bool) (*Local, error) {
	st, err := sqlite.Open(ctx, filepath.Join(dir, "bench.db"))
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	eng, err := engine.New(engine.Options{Store: st, Backends: backends, Node: "bench"})
	if err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("new engine: %w", err)
	}
	if err := eng.Start(ctx); err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("start engine: %w", err)
	}
	l := &Local{Groups: eng, engine: eng, store: st}
	if !overHTTP {
		return l, nil
	}

	// Serve the engine on a loopback port and talk to it as a client would.
	srv, err := server.New(server.Options{Service: eng, WithOwner: engine.WithOwner,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		_ = l.Stop(ctx)
		return nil, fmt.Errorf("new server: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = l.Stop(ctx)
		return nil, fmt.Errorf("listen: %w", err)
	}
	l.http = &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = l.http.Serve(ln) }()
	l.Client = api.NewClient("http://"+ln.Addr().String(), "bench")
	l.Groups = l.Client
	return l, nil
}

// Stop shuts the server, the engine and the store down.
func (l *Local) Stop(ctx context.Context) error {
	var errs []error
	if l.http != nil {
		errs = append(errs, l.http.Shutdown(ctx))
	}
	errs = append(errs, l.engine.Stop(ctx), l.store.Close())
	return errors.Join(errs...)
}
