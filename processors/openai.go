package processors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"
	"go.yaml.in/yaml/v3"
	"golang.org/x/time/rate"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/engine"
)

// OpenAIOptions configures the openai kind: any OpenAI-compatible
// chat-completions endpoint (OpenAI, vLLM, Ollama, llama.cpp).
type OpenAIOptions struct {
	// BaseURL is the API root, such as https://api.openai.com/v1 or
	// http://127.0.0.1:11434/v1; required, there is no default.
	BaseURL string `yaml:"base_url"`
	// Model is the model name sent with each request.
	Model string `yaml:"model"`
	// APIKeyEnv names the environment variable holding the API key; empty
	// for servers without authentication.
	APIKeyEnv string `yaml:"api_key_env"`
	// RequestsPerMinute and TokensPerMinute cap the calls (0: no cap).
	// Tokens are counted before a call from an estimate (prompt
	// characters / 4 plus max_output_tokens) and corrected from the usage
	// the server reports.
	RequestsPerMinute float64 `yaml:"requests_per_minute"`
	TokensPerMinute   float64 `yaml:"tokens_per_minute"`
	// MaxOutputTokens bounds each completion (0: not sent).
	MaxOutputTokens int64 `yaml:"max_output_tokens"`
	// Temperature is sent when set.
	Temperature *float64 `yaml:"temperature"`
	// Timeout bounds one request (default 120s).
	Timeout time.Duration `yaml:"timeout"`
	// Strict asks for strict structured outputs (default true); turn it
	// off for servers that reject the strict flag.
	Strict *bool `yaml:"strict"`
}

// OpenAI is the processor of the openai kind. For each run it asks the
// model for a structured output: the task's output schema wrapped so that
// the model also returns reasoning and a confidence per top-level field,
// which become the basis (without citations: a chat model cites nothing).
// 429 and 5xx replies, timeouts and connection errors fail the run as
// transient, honouring Retry-After; malformed JSON from the model is
// transient on the first attempt and final after.
type OpenAI struct {
	opts    OpenAIOptions
	client  openai.Client
	strict  bool
	source  string
	reqs    *rate.Limiter // nil: no cap
	tokens  *rate.Limiter // nil: no cap
	log     *slog.Logger
	tasks   sync.Map // schema text -> *llmTask
	pauseMu sync.Mutex
	// pausedUntil holds every request back after a 429 asked for a wait.
	pausedUntil time.Time
}

var _ engine.Processor = (*OpenAI)(nil)

// NewOpenAI makes an openai processor.
func NewOpenAI(opts OpenAIOptions, log *slog.Logger) (*OpenAI, error) {
	// Validate and default the options.
	var errs []error
	u, err := url.Parse(opts.BaseURL)
	switch {
	case opts.BaseURL == "":
		errs = append(errs, errors.New("base_url: must be set"))
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		errs = append(errs, fmt.Errorf(
			"base_url: must be an absolute http or https URL, not %q", opts.BaseURL))
	}
	if opts.Model == "" {
		errs = append(errs, errors.New("model: must be set"))
	}
	apiKey := ""
	if opts.APIKeyEnv != "" {
		v, ok := os.LookupEnv(opts.APIKeyEnv)
		if !ok || v == "" {
			errs = append(errs, fmt.Errorf(
				"api_key_env: environment variable %s is not set", opts.APIKeyEnv))
		}
		apiKey = v
	}
	if opts.RequestsPerMinute < 0 {
		errs = append(errs, errors.New("requests_per_minute: must be >= 0"))
	}
	if opts.TokensPerMinute < 0 {
		errs = append(errs, errors.New("tokens_per_minute: must be >= 0"))
	}
	if opts.MaxOutputTokens < 0 {
		errs = append(errs, errors.New("max_output_tokens: must be >= 0"))
	}
	if opts.Timeout < 0 {
		errs = append(errs, errors.New("timeout: must be > 0"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if opts.Timeout == 0 {
		opts.Timeout = 120 * time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if apiKey == "" {
		apiKey = "none" // local servers ignore it; the SDK wants one
	}

	// Retries belong to the engine, so the SDK makes one attempt.
	o := &OpenAI{
		opts: opts,
		client: openai.NewClient(
			option.WithBaseURL(opts.BaseURL),
			option.WithAPIKey(apiKey),
			option.WithMaxRetries(0),
		),
		strict: opts.Strict == nil || *opts.Strict,
		source: (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String(),
		log:    log,
	}
	if opts.RequestsPerMinute > 0 {
		o.reqs = rate.NewLimiter(rate.Limit(opts.RequestsPerMinute/60), 1)
	}
	if opts.TokensPerMinute > 0 {
		o.tokens = rate.NewLimiter(rate.Limit(opts.TokensPerMinute/60), int(opts.TokensPerMinute))
	}
	return o, nil
}

// newOpenAIKind is the Factory of the openai kind.
func newOpenAIKind(options yaml.Node, log *slog.Logger) (engine.Processor, error) {
	var o OpenAIOptions
	if err := DecodeOptions(options, &o); err != nil {
		return nil, err
	}
	return NewOpenAI(o, log)
}

// Execute runs each job in its own goroutine; the engine bounds how many
// are in flight.
func (o *OpenAI) Execute(ctx context.Context, jobs []engine.Job, r engine.Reporter) {
	for _, j := range jobs {
		go func() {
			out := o.run(ctx, j)
			if ctx.Err() == nil {
				r.Complete(j.RunID, out)
			}
		}()
	}
}

// task returns the compiled llmTask of a schema.
func (o *OpenAI) task(schema api.Schema) (*llmTask, error) {
	key := schema.Type + "\x00" + string(schema.JSONSchema)
	if schema.Description != nil {
		key += "\x00" + *schema.Description
	}
	if t, ok := o.tasks.Load(key); ok {
		return t.(*llmTask), nil
	}
	t, err := newLLMTask(schema, o.strict)
	if err != nil {
		return nil, err
	}
	o.tasks.Store(key, t)
	return t, nil
}

// run asks the model for one job's output.
func (o *OpenAI) run(ctx context.Context, j engine.Job) engine.Outcome {
	var schema api.Schema
	if j.Input.TaskSpec != nil {
		schema = j.Input.TaskSpec.OutputSchema
	}
	t, err := o.task(schema)
	if err != nil {
		return engine.Outcome{Err: err}
	}
	system, user := llmPrompt(t, j.Input.Input, j.Input.SourcePolicy)

	// Wait for the rate limits and any pause a 429 asked for.
	estimate := (len(system)+len(user)+t.responseChars)/4 + int(o.opts.MaxOutputTokens)
	if err := o.admit(ctx, estimate); err != nil {
		return engine.Outcome{Err: engine.Transient(fmt.Errorf("wait for rate limit: %w", err), 0)}
	}

	// Call the model within the per-request timeout and the run deadline.
	params := openai.ChatCompletionNewParams{
		Model: shared.ChatModel(o.opts.Model),
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.SystemMessage(system), openai.UserMessage(user),
		},
		ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{
			OfJSONSchema: &shared.ResponseFormatJSONSchemaParam{
				JSONSchema: shared.ResponseFormatJSONSchemaJSONSchemaParam{
					Name:   "task_output",
					Schema: t.response,
					Strict: openai.Bool(o.strict),
				},
			},
		},
	}
	if o.opts.MaxOutputTokens > 0 {
		params.MaxCompletionTokens = openai.Int(o.opts.MaxOutputTokens)
	}
	if o.opts.Temperature != nil {
		params.Temperature = openai.Float(*o.opts.Temperature)
	}
	rctx, cancel := context.WithTimeout(ctx, o.opts.Timeout)
	defer cancel()
	if !j.Deadline.IsZero() {
		rctx, cancel = context.WithDeadline(rctx, j.Deadline)
		defer cancel()
	}
	start := time.Now()
	resp, err := o.client.Chat.Completions.New(rctx, params)
	if err != nil {
		return engine.Outcome{Err: o.callError(ctx, rctx, err, time.Since(start))}
	}
	usage := map[string]any{
		"model":             resp.Model,
		"prompt_tokens":     resp.Usage.PromptTokens,
		"completion_tokens": resp.Usage.CompletionTokens,
		"total_tokens":      resp.Usage.TotalTokens,
	}
	o.account(estimate, int(resp.Usage.TotalTokens))
	out := o.parse(t, resp, j.Attempt)
	out.Usage = usage
	return out
}

// admit waits until the request and token limits allow a call.
func (o *OpenAI) admit(ctx context.Context, tokens int) error {
	o.pauseMu.Lock()
	pause := time.Until(o.pausedUntil)
	o.pauseMu.Unlock()
	if pause > 0 && !sleepCtx(ctx, pause) {
		return ctx.Err()
	}
	if o.reqs != nil {
		if err := o.reqs.Wait(ctx); err != nil {
			return err
		}
	}
	if o.tokens != nil {
		return o.tokens.WaitN(ctx, min(max(tokens, 1), o.tokens.Burst()))
	}
	return nil
}

// account charges the token limiter for tokens used beyond the estimate.
func (o *OpenAI) account(estimate, used int) {
	if o.tokens != nil && used > estimate {
		o.tokens.ReserveN(time.Now(), min(used-estimate, o.tokens.Burst()))
	}
}

// callError classifies a failed call: rate limits, server errors,
// timeouts and connection errors are transient; other API errors are not.
func (o *OpenAI) callError(ctx, rctx context.Context, err error, took time.Duration) error {
	var apiErr *openai.Error
	if errors.As(err, &apiErr) {
		msg := apiErr.Message
		if msg == "" {
			msg = http.StatusText(apiErr.StatusCode)
		}
		e := fmt.Errorf("%s: model %s: status %d: %s", o.source, o.opts.Model, apiErr.StatusCode, msg)
		if apiErr.StatusCode == http.StatusTooManyRequests || apiErr.StatusCode >= 500 {
			var wait time.Duration
			if apiErr.Response != nil {
				wait = retryAfterHeaders(apiErr.Response.Header)
			}
			if apiErr.StatusCode == http.StatusTooManyRequests && wait > 0 {
				o.pause(wait)
			}
			return engine.Transient(e, wait)
		}
		return e
	}
	if ctx.Err() == nil && errors.Is(rctx.Err(), context.DeadlineExceeded) {
		return engine.Transient(fmt.Errorf("%s: model %s: no reply within %s",
			o.source, o.opts.Model, took.Round(time.Millisecond)), 0)
	}
	return engine.Transient(fmt.Errorf("call %s: %w", o.source, err), 0)
}

// pause holds every request back for d.
func (o *OpenAI) pause(d time.Duration) {
	o.pauseMu.Lock()
	defer o.pauseMu.Unlock()
	if until := time.Now().Add(d); until.After(o.pausedUntil) {
		o.pausedUntil = until
	}
}

// retryAfterHeaders reads Retry-After-Ms, then Retry-After.
func retryAfterHeaders(h http.Header) time.Duration {
	if ms, err := strconv.ParseFloat(h.Get("Retry-After-Ms"), 64); err == nil && ms > 0 {
		return time.Duration(ms * float64(time.Millisecond))
	}
	return parseRetryAfter(h.Get("Retry-After"), time.Now())
}

// llmAnswer is the wrapped answer the response schema asks for.
type llmAnswer struct {
	Output json.RawMessage `json:"output"`
	Basis  map[string]struct {
		Reasoning  string `json:"reasoning"`
		Confidence string `json:"confidence"`
	} `json:"basis"`
}

// parse turns the completion into an outcome.
func (o *OpenAI) parse(t *llmTask, resp *openai.ChatCompletion, attempt int) engine.Outcome {
	if len(resp.Choices) == 0 {
		return engine.Outcome{Err: engine.Transient(fmt.Errorf(
			"%s: model %s returned no choices", o.source, o.opts.Model), 0)}
	}
	msg := resp.Choices[0].Message
	if msg.Refusal != "" {
		return engine.Outcome{Err: fmt.Errorf("model %s refused: %s", o.opts.Model, msg.Refusal)}
	}

	// Malformed answers are retried once: sampling may do better.
	malformed := func(why string) engine.Outcome {
		err := fmt.Errorf("model %s returned malformed output (%s, finish_reason %s): %s",
			o.opts.Model, why, resp.Choices[0].FinishReason, snippet([]byte(msg.Content)))
		if attempt <= 1 {
			err = engine.Transient(err, 0)
		}
		return engine.Outcome{Err: err}
	}
	var ans llmAnswer
	if err := json.Unmarshal([]byte(msg.Content), &ans); err != nil {
		return malformed("not JSON: " + err.Error())
	}
	if len(ans.Output) == 0 || string(ans.Output) == "null" {
		return malformed("no output")
	}

	// Build the content: a string for text, else an object with the
	// nulls strict mode added for optional fields removed.
	content := ans.Output
	if t.kind == api.OutputText {
		var s string
		if json.Unmarshal(content, &s) != nil {
			return malformed("output is not a string")
		}
	} else {
		var obj map[string]any
		if json.Unmarshal(content, &obj) != nil || obj == nil {
			return malformed("output is not an object")
		}
		dropOptionalNulls(obj, t.original)
		content = mustJSON(obj)
	}

	// One basis entry per field that the output holds.
	fields := t.fields
	if t.kind == api.OutputText {
		fields = []string{"output"}
	}
	var present map[string]json.RawMessage
	if t.kind == api.OutputJSON {
		_ = json.Unmarshal(content, &present)
	}
	basis := make([]api.FieldBasis, 0, len(fields))
	for _, f := range fields {
		if t.kind == api.OutputJSON {
			if _, ok := present[f]; !ok {
				continue
			}
		}
		fb := api.FieldBasis{Field: f, Citations: []api.Citation{},
			Reasoning: "answered by model " + o.opts.Model + " without web research"}
		if b, ok := ans.Basis[f]; ok {
			if strings.TrimSpace(b.Reasoning) != "" {
				fb.Reasoning = b.Reasoning
			}
			switch c := strings.ToLower(b.Confidence); c {
			case "low", "medium", "high":
				fb.Confidence = &c
			}
		}
		basis = append(basis, fb)
	}
	return engine.Outcome{Output: &api.Output{
		Type: t.kind, Content: content, Basis: basis, OutputSchema: t.outputSchema,
	}}
}
