package api

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// GroupRuns implements TaskGroups. The runs stream is a finite snapshot;
// when the connection drops before the server ends it, the client
// reconnects with last_event_id set to the last run it delivered, so fn
// sees every run once.
func (c *Client) GroupRuns(ctx context.Context, groupID string, q GroupRunsQuery, fn func(*TaskRunEvent) error) error {
	lastID := q.LastEventID
	query := func() url.Values {
		v := url.Values{}
		if lastID != "" {
			v.Set("last_event_id", lastID)
		}
		if q.Status != "" {
			v.Set("status", string(q.Status))
		}
		if q.IncludeInput {
			v.Set("include_input", "true")
		}
		if q.IncludeOutput {
			v.Set("include_output", "true")
		}
		return v
	}
	deliver := func(ev Event) error {
		re, ok := ev.(*TaskRunEvent)
		if !ok {
			return c.streamEventError(ev)
		}
		if re.EventID != nil {
			lastID = *re.EventID
		}
		return fn(re)
	}
	path := "/v1/tasks/groups/" + url.PathEscape(groupID) + "/runs"
	return c.resumable(ctx, "/v1/tasks/groups/{taskgroup_id}/runs", path, query, deliver,
		func() bool { return true })
}

// GroupEvents implements TaskGroups. It returns nil once the server closes
// the stream after a task_group_status event with is_active false, or when
// q.Timeout (default one hour, the server's limit) has passed. A connection
// that drops or closes earlier is resumed transparently from the last
// event_id seen, so fn sees each event once.
func (c *Client) GroupEvents(ctx context.Context, groupID string, q GroupEventsQuery, fn func(Event) error) error {
	limit := q.Timeout
	if limit <= 0 {
		limit = groupEventsLimit
	}
	deadline := time.Now().Add(limit)
	lastID := q.LastEventID
	inactive := false
	query := func() url.Values {
		v := url.Values{}
		if lastID != "" {
			v.Set("last_event_id", lastID)
		}
		if q.Timeout > 0 {
			secs := max(time.Until(deadline).Seconds(), 0.001)
			v.Set("timeout", strconv.FormatFloat(secs, 'f', 3, 64))
		}
		return v
	}
	deliver := func(ev Event) error {
		switch e := ev.(type) {
		case *TaskGroupStatusEvent:
			lastID = e.EventID
			inactive = !e.Status.IsActive
		case *TaskRunEvent:
			if e.EventID != nil {
				lastID = *e.EventID
			}
		}
		return fn(ev)
	}
	done := func() bool { return inactive || !time.Now().Before(deadline) }
	path := "/v1/tasks/groups/" + url.PathEscape(groupID) + "/events"
	return c.resumable(ctx, "/v1/tasks/groups/{taskgroup_id}/events", path, query, deliver, done)
}

// RunEvents implements TaskRuns. A run's stream has no cursor (a new
// connection replays it from the start), so a broken stream is returned as
// a *StreamError rather than resumed.
func (c *Client) RunEvents(ctx context.Context, runID string, fn func(Event) error) error {
	resp, err := c.send(ctx, request{
		method: http.MethodGet, endpoint: "/v1/tasks/runs/{run_id}/events",
		path:   "/v1/tasks/runs/" + url.PathEscape(runID) + "/events",
		stream: true, policy: retryIdempotent,
	})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	err = ReadEvents(resp.Body, fn)
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// resumable reads a group stream, reconnecting with the query's current
// cursor when the connection breaks, or when it ends cleanly before done()
// holds. Reconnects that deliver no event count against the retry budget;
// one that delivers events resets it.
func (c *Client) resumable(ctx context.Context, endpoint, path string, query func() url.Values,
	deliver func(Event) error, done func() bool) error {
	failures := 0
	for {
		// Connect (send retries failed connects itself) and read.
		resp, err := c.send(ctx, request{
			method: http.MethodGet, endpoint: endpoint, path: path,
			query: query(), stream: true, policy: retryIdempotent,
		})
		if err != nil {
			return err
		}
		delivered := false
		err = ReadEvents(resp.Body, func(ev Event) error {
			delivered = true
			return deliver(ev)
		})
		resp.Body.Close()

		// Tell a clean end from a break, and the caller's errors from both.
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil && !isStreamError(err):
			return err
		case err == nil && done():
			return nil
		}
		if delivered {
			failures = 0
		}
		failures++
		if failures > c.maxRetries {
			if err == nil {
				return &StreamError{Err: errStreamEnded}
			}
			return err
		}
		wait := c.backoff(failures - 1)
		if err != nil {
			c.log.Warn("resuming event stream", "endpoint", endpoint, "attempt", failures,
				"wait", wait, "error", err)
		} else {
			// A stream ends cleanly whenever the group is idle, e.g. before
			// its first runs are added: routine, not news.
			c.log.Debug("event stream ended before the group finished; reconnecting",
				"endpoint", endpoint, "attempt", failures, "wait", wait)
		}
		if err := sleepCtx(ctx, wait); err != nil {
			return err
		}
	}
}

// streamEventError turns an unexpected event on a runs stream into an
// error: an ErrorEvent becomes its *Error, anything else is ignored.
func (c *Client) streamEventError(ev Event) error {
	if ee, ok := ev.(*ErrorEvent); ok {
		return &Error{Kind: ErrInternal, Message: ee.Error.Message, Detail: ee.Error.Detail,
			RefID: ee.Error.RefID}
	}
	return nil
}
