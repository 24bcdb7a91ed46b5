package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Serve serves the API on ln until ctx is done, then shuts down
// gracefully: it stops accepting connections, ends every open stream (each
// flushes what it wrote and closes) and waiting result call, and waits for
// the other requests in flight, for at most shutdownTimeout before it
// closes the remaining connections. It returns nil after a shutdown that
// ctx asked for.
//
// The http.Server has no write timeout, since streams stay open for up to
// an hour; each stream write has its own deadline (StreamWriteTimeout).
func (s *Server) Serve(ctx context.Context, ln net.Listener, shutdownTimeout time.Duration) error {
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	hs.RegisterOnShutdown(s.CloseStreams)
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()

	// Serve until asked to stop or the listener fails.
	select {
	case err := <-served:
		s.CloseStreams()
		return fmt.Errorf("serve http: %w", err)
	case <-ctx.Done():
	}

	// Shut down within the timeout, then force the rest closed.
	s.log.Info("shutting down http server", "timeout", shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err := hs.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		s.log.Warn("http shutdown timed out; closing connections")
		err = hs.Close()
	}
	if serr := <-served; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return fmt.Errorf("serve http: %w", serr)
	}
	if err != nil {
		return fmt.Errorf("shut down http server: %w", err)
	}
	return nil
}
