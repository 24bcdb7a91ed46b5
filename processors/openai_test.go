package processors

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/engine"
)

// chatRequest is the part of a chat-completions request the test server
// reads.
type chatRequest struct {
	Model    string `json:"model"`
	Messages []struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	} `json:"messages"`
	ResponseFormat struct {
		Type       string `json:"type"`
		JSONSchema struct {
			Name   string         `json:"name"`
			Strict bool           `json:"strict"`
			Schema map[string]any `json:"schema"`
		} `json:"json_schema"`
	} `json:"response_format"`
	MaxCompletionTokens int64 `json:"max_completion_tokens"`
}

// chatReply is what the test server answers one request with.
type chatReply struct {
	status  int
	headers map[string]string
	content string // the assistant message content, for status 200
	refusal string
	errMsg  string // the OpenAI error message, for other statuses
	block   bool   // wait until the client gives up
}

// chatServer is a chat-completions server on 127.0.0.1 that speaks the
// OpenAI wire format and answers from a script.
type chatServer struct {
	srv    *httptest.Server
	mu     sync.Mutex
	reqs   []chatRequest
	times  []time.Time
	script func(n int, req chatRequest) chatReply
}

func newChatServer(t *testing.T, script func(n int, req chatRequest) chatReply) *chatServer {
	s := &chatServer{script: script}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/chat/completions" {
			http.Error(w, `{"error":{"message":"not found","type":"invalid_request_error"}}`, 404)
			return
		}
		if r.Header.Get("Authorization") != "Bearer test-key" {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`)
			return
		}
		var req chatRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, `{"error":{"message":"bad json"}}`, 400)
			return
		}
		s.mu.Lock()
		n := len(s.reqs)
		s.reqs = append(s.reqs, req)
		s.times = append(s.times, time.Now())
		s.mu.Unlock()
		rep := s.script(n, req)
		for k, v := range rep.headers {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json")
		if rep.block {
			<-r.Context().Done()
			return
		}
		if rep.status != 0 && rep.status != http.StatusOK {
			w.WriteHeader(rep.status)
			_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
				"message": rep.errMsg, "type": "requests", "param": nil, "code": "rate_limit_exceeded"}})
			return
		}
		var refusal any
		if rep.refusal != "" {
			refusal = rep.refusal
		}
		_ = json.NewEncoder(w).Encode(map[string]any{
			"id": fmt.Sprintf("chatcmpl-%d", n), "object": "chat.completion", "created": 1764800000,
			"model": req.Model, "system_fingerprint": "fp_test",
			"choices": []any{map[string]any{
				"index": 0, "logprobs": nil, "finish_reason": "stop",
				"message": map[string]any{"role": "assistant", "content": rep.content, "refusal": refusal},
			}},
			"usage": map[string]any{"prompt_tokens": 120, "completion_tokens": 45, "total_tokens": 165},
		})
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// requests returns the requests received so far.
func (s *chatServer) requests() []chatRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]chatRequest(nil), s.reqs...)
}

// newTestOpenAI makes an openai processor for the server.
func newTestOpenAI(t *testing.T, s *chatServer, o OpenAIOptions) *OpenAI {
	t.Helper()
	o.BaseURL = s.srv.URL + "/v1"
	o.Model = "test-model"
	o.APIKeyEnv = "TASKPIPE_TEST_OPENAI_KEY"
	p, err := NewOpenAI(o, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// runOne executes one job and returns its outcome.
func runOne(t *testing.T, p engine.Processor, j engine.Job) engine.Outcome {
	t.Helper()
	r := newRecorder(1)
	p.Execute(context.Background(), []engine.Job{j}, r)
	r.wait(t, 30*time.Second)
	return r.get(t, j.RunID)
}

const companySchema = `{"type":"object","properties":{
	"ceo":{"type":"string","description":"Current chief executive"},
	"employees":{"type":"integer","description":"Headcount"},
	"segments":{"type":"array","items":{"type":"string"}},
	"tier":{"type":"string","enum":["large","small"]},
	"ticker":{"type":"string","description":"Stock ticker, if listed"}},
	"required":["ceo","employees","segments","tier"],"additionalProperties":false}`

func TestOpenAI_StructuredOutput(t *testing.T) {
	t.Setenv("TASKPIPE_TEST_OPENAI_KEY", "test-key")
	srv := newChatServer(t, func(n int, req chatRequest) chatReply {
		return chatReply{content: `{"output":{"ceo":"Jane Roe","employees":1200,` +
			`"segments":["cloud","retail"],"tier":"large","ticker":null},"basis":{` +
			`"ceo":{"reasoning":"Named CEO in 2024.","confidence":"high"},` +
			`"employees":{"reasoning":"Last annual report.","confidence":"Medium"},` +
			`"segments":{"reasoning":"Reporting segments.","confidence":"medium"},` +
			`"tier":{"reasoning":"By revenue.","confidence":"low"},` +
			`"ticker":{"reasoning":"Not listed.","confidence":"high"}}}`}
	})
	p := newTestOpenAI(t, srv, OpenAIOptions{MaxOutputTokens: 800})
	j := jsonJob("run_1", `{"company":"Acme Corp"}`, companySchema)
	j.Input.SourcePolicy = &api.SourcePolicy{IncludeDomains: []string{"sec.gov"}}
	o := runOne(t, p, j)
	if o.Err != nil {
		t.Fatal(o.Err)
	}

	// What was asked: strict wrapped schema, prompt with input and fields.
	reqs := srv.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests", len(reqs))
	}
	req := reqs[0]
	rf := req.ResponseFormat
	if rf.Type != "json_schema" || !rf.JSONSchema.Strict || rf.JSONSchema.Name != "task_output" ||
		req.Model != "test-model" || req.MaxCompletionTokens != 800 {
		t.Errorf("request %+v", req)
	}
	out := rf.JSONSchema.Schema["properties"].(map[string]any)["output"].(map[string]any)
	if got := fmt.Sprint(out["required"]); got != "[ceo employees segments ticker tier]" {
		t.Errorf("strict output required %s", got)
	}
	ticker := out["properties"].(map[string]any)["ticker"].(map[string]any)
	if fmt.Sprint(ticker["type"]) != "[string null]" {
		t.Errorf("optional ticker not nullable: %v", ticker)
	}
	basis := rf.JSONSchema.Schema["properties"].(map[string]any)["basis"].(map[string]any)
	if got := fmt.Sprint(basis["required"]); got != "[ceo employees segments ticker tier]" {
		t.Errorf("basis required %s", got)
	}
	prompt := req.Messages[0].Content + "\n" + req.Messages[1].Content
	for _, want := range []string{`{"company":"Acme Corp"}`, "- ceo (string): Current chief executive",
		`- tier (string), one of ["large","small"]`, "sec.gov"} {
		if !strings.Contains(prompt, want) {
			t.Errorf("prompt lacks %q:\n%s", want, prompt)
		}
	}

	// What came back: content valid for the original schema, and a basis.
	v, _ := jsonschema.UnmarshalJSON(bytes.NewReader(o.Output.Content))
	if err := compileSchema(t, companySchema).Validate(v); err != nil {
		t.Errorf("content %s invalid: %v", o.Output.Content, err)
	}
	if strings.Contains(string(o.Output.Content), "ticker") {
		t.Errorf("null optional field kept: %s", o.Output.Content)
	}
	var got []string
	for _, b := range o.Output.Basis {
		got = append(got, fmt.Sprintf("%s/%s/%s", b.Field, *b.Confidence, b.Reasoning))
	}
	want := "ceo/high/Named CEO in 2024.,employees/medium/Last annual report.," +
		"segments/medium/Reporting segments.,tier/low/By revenue."
	if strings.Join(got, ",") != want {
		t.Errorf("basis %v, want %s", got, want)
	}
	if o.Usage["total_tokens"] != int64(165) || o.Usage["prompt_tokens"] != int64(120) {
		t.Errorf("usage %v", o.Usage)
	}
}

func TestOpenAI_TextAndAuto(t *testing.T) {
	t.Setenv("TASKPIPE_TEST_OPENAI_KEY", "test-key")
	srv := newChatServer(t, func(n int, req chatRequest) chatReply {
		if _, ok := req.ResponseFormat.JSONSchema.Schema["properties"].(map[string]any)["output"].(map[string]any)["properties"]; ok {
			return chatReply{content: `{"output":{"summary":"A maker of anvils.","key_facts":["founded 1920"]},` +
				`"basis":{"summary":{"reasoning":"Known.","confidence":"medium"},"key_facts":{"reasoning":"Known.","confidence":"low"}}}`}
		}
		return chatReply{content: `{"output":"# Acme\n\nMakes anvils.","basis":{"output":{"reasoning":"Known.","confidence":"low"}}}`}
	})
	p := newTestOpenAI(t, srv, OpenAIOptions{})
	desc := "A one-paragraph profile"
	j := jsonJob("text", `"Acme"`, "{}")
	j.Input.TaskSpec = &api.TaskSpec{OutputSchema: api.Schema{Type: api.SchemaText, Description: &desc}}
	o := runOne(t, p, j)
	if o.Err != nil || o.Output.Type != api.OutputText || string(o.Output.Content) != `"# Acme\n\nMakes anvils."` ||
		len(o.Output.Basis) != 1 || o.Output.Basis[0].Field != "output" {
		t.Errorf("text outcome %+v %v", o.Output, o.Err)
	}
	if !strings.Contains(srv.requests()[0].Messages[1].Content, desc) {
		t.Errorf("text prompt lacks the description")
	}
	j.Input.TaskSpec = &api.TaskSpec{OutputSchema: api.Schema{Type: api.SchemaAuto}}
	j.RunID = "auto"
	o = runOne(t, p, j)
	if o.Err != nil || o.Output.Type != api.OutputJSON || len(o.Output.OutputSchema) == 0 ||
		len(o.Output.Basis) != 2 {
		t.Errorf("auto outcome %+v %v", o.Output, o.Err)
	}
}

func TestOpenAI_ErrorsAreClassified(t *testing.T) {
	t.Setenv("TASKPIPE_TEST_OPENAI_KEY", "test-key")
	cases := []struct {
		name      string
		reply     chatReply
		attempt   int
		want      string
		transient bool
		wait      time.Duration
	}{
		{"429 retry-after", chatReply{status: 429, headers: map[string]string{"Retry-After": "7"},
			errMsg: "Rate limit reached for requests"}, 1, "status 429: Rate limit reached", true, 7 * time.Second},
		{"503", chatReply{status: 503, errMsg: "overloaded"}, 1, "status 503: overloaded", true, 0},
		{"400", chatReply{status: 400, errMsg: "Invalid schema for response_format"}, 1,
			"status 400: Invalid schema", false, 0},
		{"malformed first attempt", chatReply{content: `{"output": {"ceo": "Ja`}, 1,
			"malformed output (not JSON", true, 0},
		{"malformed second attempt", chatReply{content: `{"output": {"ceo": "Ja`}, 2,
			"malformed output (not JSON", false, 0},
		{"output not an object", chatReply{content: `{"output":[1],"basis":{}}`}, 1,
			"output is not an object", true, 0},
		{"refusal", chatReply{refusal: "I can't help with that."}, 1, "refused: I can't help", false, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := newChatServer(t, func(int, chatRequest) chatReply { return c.reply })
			p := newTestOpenAI(t, srv, OpenAIOptions{})
			j := jsonJob("r", `"Acme"`, companySchema)
			j.Attempt = c.attempt
			o := runOne(t, p, j)
			if o.Err == nil || !strings.Contains(o.Err.Error(), c.want) {
				t.Fatalf("error %v, want %q", o.Err, c.want)
			}
			transient, wait := engine.IsTransient(o.Err)
			if transient != c.transient || wait != c.wait {
				t.Errorf("transient %v after %s, want %v after %s", transient, wait, c.transient, c.wait)
			}
		})
	}
}

func TestOpenAI_TimeoutIsTransient(t *testing.T) {
	t.Setenv("TASKPIPE_TEST_OPENAI_KEY", "test-key")
	srv := newChatServer(t, func(int, chatRequest) chatReply { return chatReply{block: true} })
	p := newTestOpenAI(t, srv, OpenAIOptions{Timeout: 200 * time.Millisecond})
	o := runOne(t, p, jsonJob("r", `"Acme"`, companySchema))
	if ok, _ := engine.IsTransient(o.Err); !ok || !strings.Contains(o.Err.Error(), "no reply within") {
		t.Errorf("outcome %v, want a transient timeout", o.Err)
	}
}

func TestOpenAI_RateLimits(t *testing.T) {
	t.Setenv("TASKPIPE_TEST_OPENAI_KEY", "test-key")
	ok := `{"output":{"ceo":"x","employees":1,"segments":[],"tier":"small"},"basis":{}}`
	srv := newChatServer(t, func(n int, _ chatRequest) chatReply {
		if n == 0 {
			return chatReply{status: 429, headers: map[string]string{"Retry-After-Ms": "300"}, errMsg: "slow down"}
		}
		return chatReply{content: ok}
	})
	// 600 requests a minute is one every 100 ms.
	p := newTestOpenAI(t, srv, OpenAIOptions{RequestsPerMinute: 600})
	if o := runOne(t, p, jsonJob("first", `"a"`, companySchema)); o.Err == nil {
		t.Fatal("first run did not get the 429")
	}
	r := newRecorder(4)
	jobs := []engine.Job{}
	for i := range 4 {
		jobs = append(jobs, jsonJob(fmt.Sprint("r", i), `"a"`, companySchema))
	}
	p.Execute(context.Background(), jobs, r)
	r.wait(t, 30*time.Second)
	for _, j := range jobs {
		if o := r.get(t, j.RunID); o.Err != nil {
			t.Errorf("%s: %v", j.RunID, o.Err)
		}
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if gap := srv.times[1].Sub(srv.times[0]); gap < 300*time.Millisecond {
		t.Errorf("next request %s after the 429, want >= Retry-After-Ms 300ms", gap)
	}
	if span := srv.times[4].Sub(srv.times[1]); span < 250*time.Millisecond {
		t.Errorf("4 requests within %s at 600/min, want >= 300ms", span)
	}
}

func TestNewOpenAI_Validates(t *testing.T) {
	t.Parallel()
	_, err := NewOpenAI(OpenAIOptions{BaseURL: "localhost:8080", APIKeyEnv: "TASKPIPE_TEST_UNSET_VARIABLE",
		RequestsPerMinute: -1}, nil)
	for _, want := range []string{"base_url: must be an absolute http or https URL", "model: must be set",
		"api_key_env: environment variable TASKPIPE_TEST_UNSET_VARIABLE is not set",
		"requests_per_minute: must be >= 0"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want %q", err, want)
		}
	}
}
