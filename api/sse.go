package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	gojson "github.com/goccy/go-json"
	sse "github.com/tmaxmax/go-sse"
)

// MaxEventSize is the largest single SSE message ReadEvents accepts. A
// task_run.state event carries a run's whole output, so the limit is far
// above the 64 KB default of most SSE readers.
const MaxEventSize = 32 << 20

// StreamError reports that an event stream broke while being read: the
// connection dropped or the bytes were not a valid stream. The client
// resumes group streams after one; errors returned by the caller's callback
// are never wrapped in it.
type StreamError struct {
	Err error
}

// Error implements error.
func (e *StreamError) Error() string { return "read event stream: " + e.Err.Error() }

// Unwrap returns the underlying read or decode error.
func (e *StreamError) Unwrap() error { return e.Err }

// ReadEvents decodes a Server-Sent Events stream of Task API events from r
// and calls fn with each, in order. It returns nil at the end of the
// stream, fn's error unchanged when fn fails, and a *StreamError when the
// stream breaks or a message is not a valid event.
//
// Comments (keep-alives), messages without data and events of a type this
// package does not know are skipped, so a server may add new event types
// without breaking older clients. The SSE `event:` name is ignored: the
// `type` field of the JSON payload decides, as in Parallel's own SDKs. An
// incomplete final message (no blank line after it) is dropped.
func ReadEvents(r io.Reader, fn func(Event) error) error {
	for msg, err := range sse.Read(r, &sse.ReadConfig{MaxEventSize: MaxEventSize}) {
		if err != nil {
			return &StreamError{Err: err}
		}
		if strings.TrimSpace(msg.Data) == "" {
			continue
		}
		ev, err := decodeKnownEvent(msg.Type, []byte(msg.Data))
		if err != nil {
			return &StreamError{Err: err}
		}
		if ev == nil {
			continue
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	return nil
}

// decodeKnownEvent decodes one message payload. It returns a nil event
// without error for a well-formed payload of an unknown type. The SSE event
// name, which taskpipe and Parallel set to the payload's type, lets the
// payload be decoded in one pass; the type inside the payload still decides.
func decodeKnownEvent(name string, data []byte) (Event, error) {
	if ev := newEvent(name); ev != nil {
		if err := gojson.Unmarshal(data, ev); err == nil && ev.EventType() == name {
			return ev, nil
		}
	}
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("decode event: %w", err)
	}
	if !knownEventType(head.Type) {
		return nil, nil
	}
	return DecodeEvent(data)
}

// knownEventType reports whether DecodeEvent has a concrete type for t.
func knownEventType(t string) bool {
	switch t {
	case EventRunState, EventGroupStatus, EventProgressStats, EventError:
		return true
	}
	return strings.HasPrefix(t, EventProgressPrefix) && len(t) > len(EventProgressPrefix)
}

// isStreamError reports whether err broke the stream itself (as opposed to
// the caller's callback or the context).
func isStreamError(err error) bool {
	var se *StreamError
	return errors.As(err, &se)
}

// errStreamEnded reports a stream the server kept closing before it was
// complete.
var errStreamEnded = errors.New("stream ended before it was complete")
