package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Client defaults.
const (
	// DefaultMaxRetries is how often a request is retried after a retryable
	// failure before its error is returned.
	DefaultMaxRetries = 4
	// DefaultMinBackoff is the wait before the first retry; it doubles for
	// each further retry, with up to 25% jitter.
	DefaultMinBackoff = 500 * time.Millisecond
	// DefaultMaxBackoff caps the wait between retries.
	DefaultMaxBackoff = 8 * time.Second
	// maxRetryAfter caps how long a server's Retry-After may delay a retry.
	maxRetryAfter = 5 * time.Minute
	// maxErrorBody is the most of an error reply's body that is read.
	maxErrorBody = 1 << 20
	// groupEventsLimit is the server's own limit on one group events
	// connection, used when the caller sets no timeout.
	groupEventsLimit = time.Hour
)

// Client speaks the Task and Task Group API over HTTP, to a taskpipe server
// or to Parallel's hosted API. It implements TaskGroups and TaskRuns, plus
// GetGroupRun and the taskpipe extensions CancelRun and CancelGroup.
//
// Error replies become *Error values whose Kind is the sentinel of the HTTP
// status (KindForStatus) and whose Message, Detail and RefID are the
// server's. Failures to reach the server are returned wrapped, so
// errors.As finds the *url.Error and *net.OpError behind them.
//
// Retries: GET calls and the cancel extensions are idempotent and are
// retried on connection errors and on 429, 500, 502, 503 and 504 replies,
// with exponential backoff that honours Retry-After. POST calls that create
// something (create group, add runs, create run) are retried only when the
// server cannot have acted on them: a 429 or 503 reply, or a connection
// that was refused before the request was sent. A create whose reply is
// lost is therefore not repeated, and no duplicate runs appear; the caller
// sees the error and decides (the pipeline resumes by metadata).
//
// A Client is safe for concurrent use.
type Client struct {
	base       string
	apiKey     string
	http       *http.Client
	log        *slog.Logger
	maxRetries int
	minBackoff time.Duration
	maxBackoff time.Duration

	counts sync.Map // endpoint -> *atomic.Int64
}

// ClientOption configures a Client.
type ClientOption func(*Client)

// WithHTTPClient makes the client send its requests through hc. The
// default is a client without an overall timeout, since the result and
// stream calls wait on purpose; deadlines come from the context.
func WithHTTPClient(hc *http.Client) ClientOption {
	return func(c *Client) { c.http = hc }
}

// WithLogger makes the client log retries and stream resumes to log.
func WithLogger(log *slog.Logger) ClientOption {
	return func(c *Client) { c.log = log }
}

// WithRetries sets how many times a retryable request is retried and the
// backoff between attempts (min doubles per retry, capped at max).
func WithRetries(maxRetries int, minBackoff, maxBackoff time.Duration) ClientOption {
	return func(c *Client) {
		c.maxRetries = maxRetries
		c.minBackoff = minBackoff
		c.maxBackoff = maxBackoff
	}
}

// NewClient returns a client of the API at baseURL (for example
// "https://api.parallel.ai" or "http://127.0.0.1:8080"; a path prefix is
// kept) that authenticates with apiKey in the x-api-key header.
func NewClient(baseURL, apiKey string, opts ...ClientOption) *Client {
	c := &Client{
		base:       strings.TrimRight(baseURL, "/"),
		apiKey:     apiKey,
		http:       &http.Client{},
		log:        slog.New(slog.DiscardHandler),
		maxRetries: DefaultMaxRetries,
		minBackoff: DefaultMinBackoff,
		maxBackoff: DefaultMaxBackoff,
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

var (
	_ TaskGroups = (*Client)(nil)
	_ TaskRuns   = (*Client)(nil)
)

// RequestCounts returns how many HTTP requests the client has sent per
// endpoint, retries and stream reconnects included, keyed by method and
// path template, e.g. "POST /v1/tasks/groups/{taskgroup_id}/runs". It lets
// a benchmark report the calls made upstream.
func (c *Client) RequestCounts() map[string]int64 {
	out := map[string]int64{}
	c.counts.Range(func(k, v any) bool {
		out[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	return out
}

// TotalRequests returns the sum of RequestCounts.
func (c *Client) TotalRequests() int64 {
	var n int64
	for _, v := range c.RequestCounts() {
		n += v
	}
	return n
}

// CreateTaskGroup implements TaskGroups.
func (c *Client) CreateTaskGroup(ctx context.Context, req CreateTaskGroupRequest) (TaskGroup, error) {
	var g TaskGroup
	err := c.callJSON(ctx, request{
		method: http.MethodPost, endpoint: "/v1/tasks/groups",
		path: "/v1/tasks/groups", body: req, policy: retryUnsent,
	}, &g)
	return g, err
}

// GetTaskGroup implements TaskGroups.
func (c *Client) GetTaskGroup(ctx context.Context, groupID string) (TaskGroup, error) {
	var g TaskGroup
	err := c.callJSON(ctx, request{
		method: http.MethodGet, endpoint: "/v1/tasks/groups/{taskgroup_id}",
		path: "/v1/tasks/groups/" + url.PathEscape(groupID), policy: retryIdempotent,
	}, &g)
	return g, err
}

// AddRuns implements TaskGroups. It sends one request; callers split
// batches above MaxRunsPerAdd themselves.
func (c *Client) AddRuns(ctx context.Context, groupID string, req TaskGroupRunRequest) (TaskGroupRunResponse, error) {
	var out TaskGroupRunResponse
	err := c.callJSON(ctx, request{
		method: http.MethodPost, endpoint: "/v1/tasks/groups/{taskgroup_id}/runs",
		path: "/v1/tasks/groups/" + url.PathEscape(groupID) + "/runs",
		body: req, policy: retryUnsent,
	}, &out)
	return out, err
}

// GetGroupRun returns a run of a group; it fails with ErrNotFound when the
// run is not in that group.
func (c *Client) GetGroupRun(ctx context.Context, groupID, runID string) (TaskRun, error) {
	var r TaskRun
	err := c.callJSON(ctx, request{
		method: http.MethodGet, endpoint: "/v1/tasks/groups/{taskgroup_id}/runs/{run_id}",
		path:   "/v1/tasks/groups/" + url.PathEscape(groupID) + "/runs/" + url.PathEscape(runID),
		policy: retryIdempotent,
	}, &r)
	return r, err
}

// CancelGroup cancels every active run of a group and returns its status.
// It is a taskpipe extension; Parallel's API has no such call.
func (c *Client) CancelGroup(ctx context.Context, groupID string) (TaskGroup, error) {
	var g TaskGroup
	err := c.callJSON(ctx, request{
		method: http.MethodPost, endpoint: "/v1/tasks/groups/{taskgroup_id}/cancel",
		path:   "/v1/tasks/groups/" + url.PathEscape(groupID) + "/cancel",
		policy: retryIdempotent,
	}, &g)
	return g, err
}

// CreateRun implements TaskRuns.
func (c *Client) CreateRun(ctx context.Context, in TaskRunInput) (TaskRun, error) {
	var r TaskRun
	err := c.callJSON(ctx, request{
		method: http.MethodPost, endpoint: "/v1/tasks/runs",
		path: "/v1/tasks/runs", body: in, policy: retryUnsent,
	}, &r)
	return r, err
}

// GetRun implements TaskRuns.
func (c *Client) GetRun(ctx context.Context, runID string) (TaskRun, error) {
	var r TaskRun
	err := c.callJSON(ctx, request{
		method: http.MethodGet, endpoint: "/v1/tasks/runs/{run_id}",
		path: "/v1/tasks/runs/" + url.PathEscape(runID), policy: retryIdempotent,
	}, &r)
	return r, err
}

// GetRunInput implements TaskRuns.
func (c *Client) GetRunInput(ctx context.Context, runID string) (TaskRunInput, error) {
	var in TaskRunInput
	err := c.callJSON(ctx, request{
		method: http.MethodGet, endpoint: "/v1/tasks/runs/{run_id}/input",
		path: "/v1/tasks/runs/" + url.PathEscape(runID) + "/input", policy: retryIdempotent,
	}, &in)
	return in, err
}

// GetRunResult implements TaskRuns. The timeout travels as whole seconds
// (rounded up); the server answers 408 (ErrTimeout) while the run is still
// active and 404 (ErrNotFound) when it failed.
func (c *Client) GetRunResult(ctx context.Context, runID string, timeout time.Duration) (TaskRunResult, error) {
	secs := int64(math.Ceil(max(timeout, 0).Seconds()))
	var res TaskRunResult
	err := c.callJSON(ctx, request{
		method: http.MethodGet, endpoint: "/v1/tasks/runs/{run_id}/result",
		path:   "/v1/tasks/runs/" + url.PathEscape(runID) + "/result",
		query:  url.Values{"timeout": {strconv.FormatInt(secs, 10)}},
		policy: retryIdempotent,
	}, &res)
	return res, err
}

// CancelRun cancels a run and returns its status. It is a taskpipe
// extension; Parallel's API has no such call.
func (c *Client) CancelRun(ctx context.Context, runID string) (TaskRun, error) {
	var r TaskRun
	err := c.callJSON(ctx, request{
		method: http.MethodPost, endpoint: "/v1/tasks/runs/{run_id}/cancel",
		path: "/v1/tasks/runs/" + url.PathEscape(runID) + "/cancel", policy: retryIdempotent,
	}, &r)
	return r, err
}

// retryPolicy says which failures of a request may be retried.
type retryPolicy int

const (
	// retryIdempotent retries connection errors and 429/5xx replies.
	retryIdempotent retryPolicy = iota
	// retryUnsent retries only failures the server cannot have acted on:
	// refused connections and 429/503 replies.
	retryUnsent
)

// request is one API call.
type request struct {
	method   string
	endpoint string // path template, the key of RequestCounts
	path     string
	query    url.Values
	body     any // marshalled to JSON when not nil
	stream   bool
	policy   retryPolicy
}

// callJSON sends req and decodes the JSON reply into out.
func (c *Client) callJSON(ctx context.Context, req request, out any) error {
	resp, err := c.send(ctx, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode %s %s reply: %w", req.method, req.endpoint, err)
	}
	return nil
}

// send performs req with retries and returns the first 2xx response; the
// caller closes its body. Error replies become *Error.
func (c *Client) send(ctx context.Context, req request) (*http.Response, error) {
	var body []byte
	if req.body != nil {
		b, err := json.Marshal(req.body)
		if err != nil {
			return nil, fmt.Errorf("encode %s %s body: %w", req.method, req.endpoint, err)
		}
		body = b
	}
	target := c.base + req.path
	if len(req.query) > 0 {
		target += "?" + req.query.Encode()
	}
	for attempt := 0; ; attempt++ {
		// Build and send one attempt.
		hr, err := http.NewRequestWithContext(ctx, req.method, target, bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("build %s %s request: %w", req.method, req.endpoint, err)
		}
		hr.Header.Set("x-api-key", c.apiKey)
		if body != nil {
			hr.Header.Set("Content-Type", "application/json")
		}
		if req.stream {
			hr.Header.Set("Accept", "text/event-stream")
		} else {
			hr.Header.Set("Accept", "application/json")
		}
		c.count(req.method + " " + req.endpoint)
		resp, err := c.http.Do(hr)

		// Decide whether the failure may be retried, and after how long.
		var wait time.Duration
		var failure error
		retryable := false
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			failure = fmt.Errorf("send %s %s: %w", req.method, req.endpoint, err)
			retryable = req.policy == retryIdempotent || refusedBeforeSending(err)
		case resp.StatusCode >= 200 && resp.StatusCode < 300:
			return resp, nil
		default:
			failure = decodeErrorReply(resp)
			wait = retryAfter(resp.Header, time.Now())
			resp.Body.Close()
			retryable = retryableStatus(resp.StatusCode, req.policy)
		}
		if !retryable || attempt >= c.maxRetries {
			return nil, failure
		}

		// Back off, then try again.
		wait = max(wait, c.backoff(attempt))
		c.log.Warn("retrying api request", "method", req.method, "endpoint", req.endpoint,
			"attempt", attempt+1, "wait", wait, "error", failure)
		if err := sleepCtx(ctx, wait); err != nil {
			// Keep the failure: a caller whose deadline passed while
			// retrying can say why the target never answered.
			return nil, fmt.Errorf("%w; last attempt: %w", err, failure)
		}
	}
}

// count adds one request to endpoint's counter.
func (c *Client) count(endpoint string) {
	v, ok := c.counts.Load(endpoint)
	if !ok {
		v, _ = c.counts.LoadOrStore(endpoint, new(atomic.Int64))
	}
	v.(*atomic.Int64).Add(1)
}

// backoff returns the wait before retry number attempt+1: minBackoff
// doubled per attempt, capped at maxBackoff, minus up to 25% jitter.
func (c *Client) backoff(attempt int) time.Duration {
	d := c.minBackoff << min(attempt, 30)
	if d <= 0 || d > c.maxBackoff {
		d = c.maxBackoff
	}
	return d - time.Duration(rand.Float64()*0.25*float64(d))
}

// retryableStatus reports whether a reply with this status may be retried
// under policy.
func retryableStatus(code int, policy retryPolicy) bool {
	switch code {
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		return true
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusGatewayTimeout:
		return policy == retryIdempotent
	}
	return false
}

// refusedBeforeSending reports whether err means the request never reached
// a server: the connection was refused or could not be dialled.
func refusedBeforeSending(err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// retryAfter reads the retry-after-ms or Retry-After (seconds or HTTP date)
// header; zero when absent or unreadable.
func retryAfter(h http.Header, now time.Time) time.Duration {
	var d time.Duration
	if ms, err := strconv.ParseFloat(h.Get("retry-after-ms"), 64); err == nil && ms > 0 {
		d = time.Duration(ms * float64(time.Millisecond))
	} else if v := h.Get("Retry-After"); v != "" {
		if secs, err := strconv.ParseFloat(v, 64); err == nil && secs > 0 {
			d = time.Duration(secs * float64(time.Second))
		} else if t, err := http.ParseTime(v); err == nil {
			d = t.Sub(now)
		}
	}
	return min(max(d, 0), maxRetryAfter)
}

// decodeErrorReply turns a non-2xx reply into an *Error carrying the
// sentinel of its status and the server's message, detail and ref_id. A
// body that is not an ErrorResponse becomes the message as text.
func decodeErrorReply(resp *http.Response) *Error {
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &Error{Kind: KindForStatus(resp.StatusCode)}
	var body ErrorResponse
	if err := json.Unmarshal(raw, &body); err == nil && body.Error.Message != "" {
		e.Message = body.Error.Message
		e.Detail = body.Error.Detail
		e.RefID = body.Error.RefID
		return e
	}
	msg := strings.TrimSpace(string(raw))
	if msg == "" {
		msg = resp.Status
	}
	e.Message = fmt.Sprintf("%s: %s", e.Kind, msg)
	return e
}

// sleepCtx waits for d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
