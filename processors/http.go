package processors

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/engine"
)

// HTTPOptions configures the http kind: a user's enrichment service that
// takes a batch of inputs in one POST, in the manner of a warehouse's
// remote functions.
type HTTPOptions struct {
	// URL receives the POSTs; http or https.
	URL string `yaml:"url"`
	// BatchSize is the most runs sent in one request (default 50).
	BatchSize int `yaml:"batch_size"`
	// Headers are sent with every request. Values may reference
	// environment variables as $NAME or ${NAME}, expanded once at start;
	// an unset variable is an error.
	Headers map[string]string `yaml:"headers"`
	// Timeout bounds one request (default 60s).
	Timeout time.Duration `yaml:"timeout"`
	// Retries is how many times a request is repeated after a 429, a 5xx
	// or a connection error (nil: 3). Retry-After is honoured. When they
	// run out, the runs fail with a transient error and the engine may
	// retry them later.
	Retries *int `yaml:"retries"`
	// Backoff is the first wait between retries, doubled each time up to
	// 30s (default 500ms).
	Backoff time.Duration `yaml:"backoff"`
}

// httpCall is one run in a request.
type httpCall struct {
	RunID        string          `json:"run_id"`
	Input        json.RawMessage `json:"input"`
	OutputSchema *api.Schema     `json:"output_schema"`
}

// httpReply is the answer for one call, in request order. Error fails the
// run; Retryable asks for the run to be tried again later.
type httpReply struct {
	Output    json.RawMessage  `json:"output"`
	Error     *string          `json:"error"`
	Retryable bool             `json:"retryable"`
	Basis     []api.FieldBasis `json:"basis"`
	Usage     map[string]any   `json:"usage"`
}

// HTTP is the processor of the http kind. It sends each batch of runs as
// {"calls":[{"run_id","input","output_schema"}...]} and expects
// {"replies":[{"output":...}|{"error":"..."}...]} back, one reply per call in
// order. A reply's error fails only its run.
type HTTP struct {
	opts    HTTPOptions
	retries int
	headers http.Header
	client  *http.Client
	// source is the URL without query or credentials, for the basis.
	source string
	log    *slog.Logger
}

var (
	_ engine.Processor = (*HTTP)(nil)
	_ engine.Closer    = (*HTTP)(nil)
)

// maxBackoff caps the wait between retries of the http and openai kinds.
const maxBackoff = 30 * time.Second

// maxReplyBytes bounds a reply body.
const maxReplyBytes = 64 << 20

// NewHTTP makes an http processor, expanding header values from the
// environment.
func NewHTTP(opts HTTPOptions, log *slog.Logger) (*HTTP, error) {
	// Validate and default the options.
	var errs []error
	u, err := url.Parse(opts.URL)
	switch {
	case opts.URL == "":
		errs = append(errs, errors.New("url: must be set"))
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		errs = append(errs, fmt.Errorf("url: must be an absolute http or https URL, not %q", opts.URL))
	}
	if opts.BatchSize < 0 {
		errs = append(errs, errors.New("batch_size: must be > 0"))
	}
	if opts.Timeout < 0 {
		errs = append(errs, errors.New("timeout: must be > 0"))
	}
	if opts.Retries != nil && *opts.Retries < 0 {
		errs = append(errs, errors.New("retries: must be >= 0"))
	}
	if opts.Backoff < 0 {
		errs = append(errs, errors.New("backoff: must be >= 0"))
	}
	headers, herrs := expandHeaders(opts.Headers)
	errs = append(errs, herrs...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if opts.BatchSize == 0 {
		opts.BatchSize = 50
	}
	if opts.Timeout == 0 {
		opts.Timeout = 60 * time.Second
	}
	retries := 3
	if opts.Retries != nil {
		retries = *opts.Retries
	}
	if opts.Backoff == 0 {
		opts.Backoff = 500 * time.Millisecond
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	source := (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 64
	return &HTTP{
		opts:    opts,
		retries: retries,
		headers: headers,
		client:  &http.Client{Transport: transport},
		source:  source,
		log:     log,
	}, nil
}

// expandHeaders resolves environment references in header values.
func expandHeaders(in map[string]string) (http.Header, []error) {
	h := http.Header{}
	var errs []error
	for k, v := range in {
		expanded := os.Expand(v, func(name string) string {
			val, ok := os.LookupEnv(name)
			if !ok {
				errs = append(errs, fmt.Errorf(
					"headers.%s: environment variable %s is not set", k, name))
			}
			return val
		})
		h.Set(k, expanded)
	}
	return h, errs
}

// newHTTPKind is the Factory of the http kind.
func newHTTPKind(options yaml.Node, log *slog.Logger) (engine.Processor, error) {
	var o HTTPOptions
	if err := DecodeOptions(options, &o); err != nil {
		return nil, err
	}
	return NewHTTP(o, log)
}

// Close releases idle connections.
func (h *HTTP) Close() error {
	h.client.CloseIdleConnections()
	return nil
}

// Execute sends the jobs in batches of batch_size, each batch from its own
// goroutine.
func (h *HTTP) Execute(ctx context.Context, jobs []engine.Job, r engine.Reporter) {
	for start := 0; start < len(jobs); start += h.opts.BatchSize {
		batch := append([]engine.Job(nil), jobs[start:min(start+h.opts.BatchSize, len(jobs))]...)
		go h.runBatch(ctx, batch, r)
	}
}

// runBatch posts one batch and completes its runs; when ctx is cancelled
// the runs are abandoned.
func (h *HTTP) runBatch(ctx context.Context, batch []engine.Job, r engine.Reporter) {
	replies, err := h.post(ctx, batch)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		for _, j := range batch {
			r.Complete(j.RunID, engine.Outcome{Err: err})
		}
		return
	}
	for i, j := range batch {
		r.Complete(j.RunID, h.outcome(j, replies[i]))
	}
}

// post sends the batch, retrying 429, 5xx and connection errors with
// backoff. The error it returns is already marked transient or not.
func (h *HTTP) post(ctx context.Context, batch []engine.Job) ([]httpReply, error) {
	calls := make([]httpCall, len(batch))
	for i, j := range batch {
		calls[i] = httpCall{RunID: j.RunID, Input: j.Input.Input}
		if j.Input.TaskSpec != nil {
			calls[i].OutputSchema = &j.Input.TaskSpec.OutputSchema
		}
	}
	body, err := json.Marshal(map[string]any{"calls": calls})
	if err != nil {
		return nil, fmt.Errorf("encode http batch: %w", err)
	}
	for attempt := 0; ; attempt++ {
		replies, retryAfter, err := h.postOnce(ctx, body, len(batch))
		if err == nil {
			return replies, nil
		}
		retryable, _ := engine.IsTransient(err)
		if !retryable || attempt >= h.retries || ctx.Err() != nil {
			return nil, err
		}
		wait := max(backoff(h.opts.Backoff, attempt), retryAfter)
		h.log.Debug("retry http batch", "url", h.source, "wait", wait, "error", err)
		if !sleepCtx(ctx, wait) {
			return nil, ctx.Err()
		}
	}
}

// postOnce makes one request. It returns the replies, or an error (transient
// for what a retry may cure) and the wait the server asked for.
func (h *HTTP) postOnce(
	ctx context.Context, body []byte, n int,
) ([]httpReply, time.Duration, error) {
	rctx, cancel := context.WithTimeout(ctx, h.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, h.opts.URL, bytes.NewReader(body))
	if err != nil {
		return nil, 0, fmt.Errorf("make http request: %w", err)
	}
	req.Header = h.headers.Clone()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, 0, engine.Transient(fmt.Errorf("post batch to %s: %w", h.source, err), 0)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxReplyBytes))
	if err != nil {
		return nil, 0, engine.Transient(fmt.Errorf("read reply of %s: %w", h.source, err), 0)
	}

	// Status: 429 and 5xx are worth retrying, other errors are not.
	if resp.StatusCode != http.StatusOK {
		err := fmt.Errorf("post batch to %s: status %d: %s", h.source, resp.StatusCode, snippet(data))
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
			ra := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
			return nil, ra, engine.Transient(err, ra)
		}
		return nil, 0, err
	}
	var reply struct {
		Replies []httpReply `json:"replies"`
	}
	if err := json.Unmarshal(data, &reply); err != nil {
		return nil, 0, fmt.Errorf("decode reply of %s: %w: %s", h.source, err, snippet(data))
	}
	if len(reply.Replies) != n {
		return nil, 0, fmt.Errorf("reply of %s has %d replies for %d calls",
			h.source, len(reply.Replies), n)
	}
	return reply.Replies, 0, nil
}

// outcome turns one reply into the outcome of its run.
func (h *HTTP) outcome(j engine.Job, rep httpReply) engine.Outcome {
	if rep.Error == nil && (len(rep.Output) == 0 || string(rep.Output) == "null") {
		return engine.Outcome{Err: fmt.Errorf("%s: reply has neither output nor error", h.source)}
	}
	return replyOutcome(j, rep, h.source)
}

// replyOutcome turns the reply of a user's service or program into an
// outcome: its error fails the run (as transient when it is retryable), its
// output becomes the run's output with the reply's basis or, without one,
// a basis entry per field whose reasoning is "returned by <source>".
func replyOutcome(j engine.Job, rep httpReply, source string) engine.Outcome {
	if rep.Error != nil {
		err := fmt.Errorf("%s: %s", source, *rep.Error)
		if rep.Retryable {
			err = engine.Transient(err, 0)
		}
		return engine.Outcome{Err: err}
	}
	out, err := makeOutput(j.Input.TaskSpec, rep.Output, "returned by "+source)
	if err != nil {
		return engine.Outcome{Err: fmt.Errorf("%s: %w", source, err)}
	}
	if rep.Basis != nil {
		for i := range rep.Basis {
			if rep.Basis[i].Citations == nil {
				rep.Basis[i].Citations = []api.Citation{}
			}
		}
		out.Basis = rep.Basis
	}
	return engine.Outcome{Output: out, Usage: rep.Usage}
}

// makeOutput wraps content returned by a service into an output of the
// kind the task spec asks for, with a plain basis entry per top-level field
// and per top-level list element that carries reasoning and no confidence.
func makeOutput(
	spec *api.TaskSpec, content json.RawMessage, reasoning string,
) (*api.Output, error) {
	plain := func(field string) api.FieldBasis {
		return api.FieldBasis{Field: field, Citations: []api.Citation{}, Reasoning: reasoning}
	}
	if spec != nil && spec.OutputSchema.Type == api.SchemaText {
		var s string
		if err := json.Unmarshal(content, &s); err != nil {
			return nil, fmt.Errorf("output must be a string for a text schema, got %s", snippet(content))
		}
		return &api.Output{Type: api.OutputText, Content: content,
			Basis: []api.FieldBasis{plain("output")}}, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(content, &obj); err != nil || obj == nil {
		return nil, fmt.Errorf("output must be a JSON object, got %s", snippet(content))
	}
	fields := make([]string, 0, len(obj))
	for k := range obj {
		fields = append(fields, k)
	}
	slices.Sort(fields)
	basis := make([]api.FieldBasis, 0, len(fields))
	for _, k := range fields {
		basis = append(basis, plain(k))
		var list []json.RawMessage
		if json.Unmarshal(obj[k], &list) == nil {
			for i := range list {
				basis = append(basis, plain(k+"."+strconv.Itoa(i)))
			}
		}
	}
	return &api.Output{Type: api.OutputJSON, Content: content, Basis: basis}, nil
}

// snippet shortens a body for an error message.
func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}

// parseRetryAfter reads a Retry-After header: seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseFloat(v, 64); err == nil && secs > 0 {
		return time.Duration(secs * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// backoff is the wait before retry number attempt (from 0): base doubled
// per attempt, capped, with up to 20% jitter.
func backoff(base time.Duration, attempt int) time.Duration {
	d := base << min(attempt, 16)
	if d <= 0 || d > maxBackoff {
		d = maxBackoff
	}
	return d - time.Duration(rand.Int64N(int64(d)/5+1))
}

// sleepCtx waits for d or until ctx is done; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
