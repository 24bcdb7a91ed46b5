package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	gojson "github.com/goccy/go-json"

	"github.com/taskpipe/taskpipe/api"
)

// streamWriter frames events as Server-Sent Events:
//
//	event: <type>
//	data: <the event as single-line JSON>
//	<blank line>
//
// It flushes at most flushDelay after an event (so a burst of events, such
// as a runs snapshot, goes out in few writes) and never writes `id:` or
// `retry:` lines:
// Parallel's Python SDK misreads blank lines after an id, and resume goes
// by the last_event_id query parameter instead. Keep-alives are `:` comment
// lines, which every SSE reader skips.
//
// Headers are committed lazily, at the first event or keep-alive, so that
// a call failing before it streams anything still gets a JSON error reply
// with its status. The handler goroutine (the engine callback) and the
// keep-alive ticker write under mu.
type streamWriter struct {
	w            http.ResponseWriter
	rc           *http.ResponseController
	writeTimeout time.Duration

	mu      sync.Mutex
	started bool
	wrote   bool        // an event or comment went out since the last tick
	err     error       // the first write error; the stream is dead after it
	pending *time.Timer // the flush armed by the last unflushed event
	closed  bool        // the handler returned; nothing may be written
}

// flushDelay bounds how long an event waits in the buffer for the events
// that follow it.
const flushDelay = 5 * time.Millisecond

// newStreamWriter returns a writer of SSE frames to w.
func newStreamWriter(w http.ResponseWriter, writeTimeout time.Duration) *streamWriter {
	return &streamWriter{w: w, rc: http.NewResponseController(w), writeTimeout: writeTimeout}
}

// Started reports whether the reply headers went out.
func (sw *streamWriter) Started() bool {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	return sw.started
}

// Send writes one event and flushes it.
func (sw *streamWriter) Send(ev api.Event) error {
	data, err := gojson.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode %s event: %w", ev.EventType(), err)
	}
	frame := make([]byte, 0, len(data)+len(ev.EventType())+18)
	frame = append(frame, "event: "...)
	frame = append(frame, ev.EventType()...)
	frame = append(frame, "\ndata: "...)
	frame = append(frame, data...)
	frame = append(frame, "\n\n"...)
	return sw.writeFrame(frame, false)
}

// Keepalive writes a `: keepalive` comment unless something was written
// since the previous call.
func (sw *streamWriter) Keepalive() error {
	sw.mu.Lock()
	idle := !sw.wrote
	sw.wrote = false
	sw.mu.Unlock()
	if !idle {
		return nil
	}
	return sw.write([]byte(": keepalive\n\n"))
}

// Start commits the stream's headers, if not yet done, and flushes them.
func (sw *streamWriter) Start() error {
	return sw.write(nil)
}

// write sends frame (possibly empty) within the write timeout and flushes.
func (sw *streamWriter) write(frame []byte) error {
	return sw.writeFrame(frame, true)
}

// writeFrame sends frame within the write timeout, then flushes now or,
// unless flushNow, within flushDelay.
func (sw *streamWriter) writeFrame(frame []byte, flushNow bool) error {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if sw.err != nil {
		return sw.err
	}
	if sw.closed {
		return errors.New("write stream: closed")
	}
	// A client that takes nothing for writeTimeout is cut off rather than
	// holding the engine call behind it.
	if err := sw.rc.SetWriteDeadline(time.Now().Add(sw.writeTimeout)); err != nil &&
		!errors.Is(err, http.ErrNotSupported) {
		sw.err = fmt.Errorf("set stream write deadline: %w", err)
		return sw.err
	}
	if !sw.started {
		h := sw.w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no")
		sw.w.WriteHeader(http.StatusOK)
		sw.started = true
	}
	if len(frame) > 0 {
		if _, err := sw.w.Write(frame); err != nil {
			sw.err = fmt.Errorf("write stream: %w", err)
			return sw.err
		}
		sw.wrote = true
	}
	if !flushNow {
		if sw.pending == nil {
			sw.pending = time.AfterFunc(flushDelay, sw.flushPending)
		}
		return nil
	}
	return sw.flushLocked()
}

// flushPending is the armed flush.
func (sw *streamWriter) flushPending() {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if sw.closed || sw.err != nil {
		return
	}
	_ = sw.flushLocked()
}

// flushLocked flushes what is buffered and disarms the pending flush.
func (sw *streamWriter) flushLocked() error {
	if sw.pending != nil {
		sw.pending.Stop()
		sw.pending = nil
	}
	if err := sw.rc.Flush(); err != nil {
		sw.err = fmt.Errorf("flush stream: %w", err)
		return sw.err
	}
	return nil
}

// close flushes what is buffered and stops all writing; the handler calls
// it before it returns.
func (sw *streamWriter) close() {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if sw.pending != nil && sw.err == nil {
		_ = sw.flushLocked()
	}
	sw.closed = true
}

// failed returns the first write error, if any.
func (sw *streamWriter) failed() error {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	return sw.err
}

// stream serves one SSE endpoint. produce runs the engine call, sending
// each event through send; its context ends when the client leaves, the
// server closes its streams, or limit (when positive) passes. The engine
// callback writes synchronously, so a slow client slows only its own
// stream's goroutine; the engine's durable event log lets that stream
// catch up from its cursor, and StreamWriteTimeout cuts off a client that
// stops reading.
//
// An error before anything was written becomes a JSON error reply with
// its status; an error after that becomes a final `error` event. The end
// of the call, or of the context, closes the stream normally.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, limit time.Duration,
	produce func(ctx context.Context, send func(api.Event) error) error) {
	ctx, cancel := s.longContext(r)
	defer cancel()
	if limit > 0 {
		var cancelLimit context.CancelFunc
		ctx, cancelLimit = context.WithTimeout(ctx, limit)
		defer cancelLimit()
	}
	gauge := s.metrics.sseClients.WithLabelValues(r.Pattern)
	gauge.Inc()
	defer gauge.Dec()

	// Send keep-alives while the stream is idle.
	sw := newStreamWriter(w, s.writeTimeout)
	defer sw.close()
	var wg sync.WaitGroup
	tickDone := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Ticking at half the interval keeps any silence under it: a tick
		// that follows a write sends nothing.
		t := time.NewTicker(s.keepalive / 2)
		defer t.Stop()
		for {
			select {
			case <-tickDone:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if sw.Keepalive() != nil {
					cancel()
					return
				}
			}
		}
	}()

	// Run the engine call; a dead client cancels it.
	err := produce(ctx, func(ev api.Event) error {
		normalizeEvent(ev)
		if err := sw.Send(ev); err != nil {
			cancel()
			return err
		}
		return nil
	})
	close(tickDone)
	wg.Wait()

	// End the stream: an error reply, a final error event, or nothing.
	ended := ctx.Err() != nil && (errors.Is(err, context.Canceled) ||
		errors.Is(err, context.DeadlineExceeded))
	switch {
	case sw.failed() != nil:
		s.log.Debug("stream client gone", "route", r.Pattern, "error", sw.failed())
		return
	case err != nil && ended && r.Context().Err() != nil:
		return // the client left
	case err != nil && ended && s.closing() && !sw.Started():
		s.writeError(w, r, errShuttingDown)
		return
	case err != nil && !ended && !sw.Started():
		s.writeError(w, r, err)
		return
	case err != nil && !ended:
		status, body := errorBody(err)
		if status == http.StatusInternalServerError {
			s.log.Error("stream failed", "route", r.Pattern, "ref_id", body.Error.RefID,
				"error", err)
		}
		_ = sw.Send(&api.ErrorEvent{Type: api.EventError, Error: body.Error})
		return
	}
	_ = sw.Start()
}
