// Package processors holds the processor kinds that execute task runs for
// the engine (synthetic, http, exec, openai) and the configuration file that
// names and limits them. Each kind is one file; config.go turns the YAML
// processor file into the engine.Backend map the engine runs with.
package processors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/zeebo/xxh3"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/engine"
)

// SyntheticReasoning is the reasoning of every basis entry the synthetic
// processor writes, so that its output can never pass for research.
const SyntheticReasoning = "Synthetic output generated offline by taskpipe from a hash " +
	"of the input; this is not research and no source was consulted."

// Latency distributions of the synthetic processor.
const (
	LatencyFixed       = "fixed"
	LatencyUniform     = "uniform"
	LatencyNormal      = "normal"
	LatencyExponential = "exponential"
)

// SyntheticOptions configures the synthetic kind.
type SyntheticOptions struct {
	// Latency simulates how long a run takes; the zero value completes runs
	// at once.
	Latency LatencyOptions `yaml:"latency"`
	// FailureRate is the fraction of inputs whose runs fail permanently.
	// Which inputs fail is decided by a hash of the input, so the same
	// inputs fail every time.
	FailureRate float64 `yaml:"failure_rate"`
	// TransientFailureRate is the fraction of attempts that fail with a
	// transient error, decided by a hash of the input and the attempt
	// number, so that a retry may succeed.
	TransientFailureRate float64 `yaml:"transient_failure_rate"`
}

// LatencyOptions is the simulated duration of one run. Each run's latency
// is drawn from the distribution with a seed taken from its input and
// attempt, so a re-run of the same inputs takes the same time.
type LatencyOptions struct {
	// Distribution is fixed (always Mean), uniform (between Min and Max),
	// normal (Mean and StdDev) or exponential (Mean); empty means none.
	// Normal and exponential draws are clamped to [Min, Max] when Max > 0.
	Distribution string        `yaml:"distribution"`
	Mean         time.Duration `yaml:"mean"`
	Min          time.Duration `yaml:"min"`
	Max          time.Duration `yaml:"max"`
	// StdDev is the spread of the normal distribution (default Mean/4).
	StdDev time.Duration `yaml:"stddev"`
}

// Validate reports every problem with the options, each naming its field.
func (o SyntheticOptions) Validate() error {
	var errs []error
	l := o.Latency
	switch l.Distribution {
	case "", LatencyFixed, LatencyUniform, LatencyNormal, LatencyExponential:
	default:
		errs = append(errs, fmt.Errorf(
			"latency.distribution: must be fixed, uniform, normal or exponential, not %q",
			l.Distribution))
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{
		{"latency.mean", l.Mean}, {"latency.min", l.Min}, {"latency.max", l.Max},
		{"latency.stddev", l.StdDev},
	} {
		if f.d < 0 {
			errs = append(errs, fmt.Errorf("%s: must be >= 0", f.name))
		}
	}
	if (l.Distribution == LatencyUniform || l.Max > 0) && l.Max < l.Min {
		errs = append(errs, errors.New("latency.max: must be >= latency.min"))
	}
	if o.FailureRate < 0 || o.FailureRate > 1 {
		errs = append(errs, errors.New("failure_rate: must be between 0 and 1"))
	}
	if o.TransientFailureRate < 0 || o.TransientFailureRate > 1 {
		errs = append(errs, errors.New("transient_failure_rate: must be between 0 and 1"))
	}
	return errors.Join(errs...)
}

// Synthetic is the offline processor: it completes each run with a
// deterministic output that is valid for the run's output schema, derived
// from a hash of the input. Every basis entry has confidence "low", the
// reasoning SyntheticReasoning and no citations.
//
// Runs without latency complete inside Execute. Runs with latency complete
// from a timer, with no goroutine per run; a run whose context is cancelled
// before its timer fires is abandoned.
type Synthetic struct {
	opts  SyntheticOptions
	plans planCache
}

var _ engine.Processor = (*Synthetic)(nil)

// NewSynthetic makes a synthetic processor.
func NewSynthetic(opts SyntheticOptions) (*Synthetic, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Latency.Distribution == LatencyNormal && opts.Latency.StdDev == 0 {
		opts.Latency.StdDev = opts.Latency.Mean / 4
	}
	return &Synthetic{opts: opts}, nil
}

// Execute completes the jobs now, or from timers when latency is set.
func (s *Synthetic) Execute(ctx context.Context, jobs []engine.Job, r engine.Reporter) {
	l := s.opts.Latency
	switch {
	case l.Distribution == "" || (l.Distribution == LatencyFixed && l.Mean == 0):
		for i := range jobs {
			r.Complete(jobs[i].RunID, s.Outcome(&jobs[i]))
		}
	case l.Distribution == LatencyFixed:
		// One timer serves the whole batch.
		batch := append([]engine.Job(nil), jobs...)
		time.AfterFunc(l.Mean, func() {
			if ctx.Err() != nil {
				return
			}
			for i := range batch {
				r.Complete(batch[i].RunID, s.Outcome(&batch[i]))
			}
		})
	default:
		for i := range jobs {
			job := jobs[i]
			time.AfterFunc(s.latency(&job), func() {
				if ctx.Err() != nil {
					return
				}
				r.Complete(job.RunID, s.Outcome(&job))
			})
		}
	}
}

// Salts keep the draws for latency and failures independent of the values.
const (
	saltLatency   = 0x6c6174656e6379
	saltFailure   = 0x6661696c757265
	saltTransient = 0x7472616e736965
)

// unit maps a random value to [0, 1).
func unit(r uint64) float64 { return float64(r>>11) / float64(1<<53) }

// latency draws how long the job takes.
func (s *Synthetic) latency(j *engine.Job) time.Duration {
	l := s.opts.Latency
	r := mix(xxh3.Hash(j.Input.Input) ^ saltLatency ^ uint64(j.Attempt))
	u := unit(r)
	var d float64
	switch l.Distribution {
	case LatencyFixed:
		return l.Mean
	case LatencyUniform:
		return l.Min + time.Duration(u*float64(l.Max-l.Min))
	case LatencyNormal:
		// Box-Muller with a second draw from the same seed.
		u1 := math.Max(u, 1e-12)
		u2 := unit(mix(r))
		z := math.Sqrt(-2*math.Log(u1)) * math.Cos(2*math.Pi*u2)
		d = float64(l.Mean) + z*float64(l.StdDev)
	case LatencyExponential:
		d = -math.Log(1-u) * float64(l.Mean)
	}
	d = math.Max(d, float64(l.Min))
	if l.Max > 0 {
		d = math.Min(d, float64(l.Max))
	}
	return time.Duration(d)
}

// Outcome is what the job ends with: an injected failure or the generated
// output. It is exported for dry runs that want one output without the
// engine.
func (s *Synthetic) Outcome(j *engine.Job) engine.Outcome {
	seed := xxh3.Hash(j.Input.Input)
	if s.opts.FailureRate > 0 && unit(mix(seed^saltFailure)) < s.opts.FailureRate {
		return engine.Outcome{Err: fmt.Errorf(
			"synthetic failure: this input is among the failure_rate %g of inputs set to fail",
			s.opts.FailureRate)}
	}
	if s.opts.TransientFailureRate > 0 &&
		unit(mix(seed^saltTransient^uint64(j.Attempt))) < s.opts.TransientFailureRate {
		return engine.Outcome{Err: engine.Transient(fmt.Errorf(
			"synthetic transient failure of attempt %d", j.Attempt), 0)}
	}
	var schema api.Schema
	if j.Input.TaskSpec != nil {
		schema = j.Input.TaskSpec.OutputSchema
	}
	out, err := s.Generate(j.Input.Input, schema)
	if err != nil {
		return engine.Outcome{Err: err}
	}
	return engine.Outcome{Output: out}
}

// Generate makes the synthetic output of input for an output schema.
func (s *Synthetic) Generate(input json.RawMessage, schema api.Schema) (*api.Output, error) {
	seed := xxh3.Hash(input)
	switch schema.Type {
	case api.SchemaJSON:
		return s.generateJSON(seed, schema.JSONSchema)
	case api.SchemaText:
		return generateText(seed, schema.Description), nil
	default:
		return generateAuto(seed), nil
	}
}

// generateJSON writes an object for a json schema, with a basis entry per
// top-level field and per element of a top-level list.
func (s *Synthetic) generateJSON(seed uint64, schema json.RawMessage) (*api.Output, error) {
	plan := s.plans.get(schema)
	if plan.err != nil {
		return nil, plan.err
	}
	root := plan.root
	buf := make([]byte, 0, 64+48*len(root.props))
	basis := make([]api.FieldBasis, 0, len(root.props)+2)
	low := "low"

	// Write the object as synthNode.write does, recording each field.
	buf = root.writeObject(buf, seed, 0, mix(seed^root.path), func(p *synthProp) {
		basis = append(basis, syntheticBasis(p.name, &low))
		for k := range listLen(p.node, seed) {
			basis = append(basis, syntheticBasis(p.name+"."+strconv.Itoa(k), &low))
		}
	})
	return &api.Output{Type: api.OutputJSON, Content: buf, Basis: basis}, nil
}

// listLen is how many elements node n, written at the top level, holds (0
// when it is not a list).
func listLen(n *synthNode, seed uint64) int {
	for n.kind == synthUnion {
		n = n.variants[mix(seed^n.path)%uint64(len(n.variants))]
	}
	if n.kind != synthArray {
		return 0
	}
	return n.arrayLen(mix(seed ^ n.path))
}

// syntheticBasis is the basis entry of one synthetic field.
func syntheticBasis(field string, confidence *string) api.FieldBasis {
	return api.FieldBasis{
		Field:      field,
		Citations:  []api.Citation{},
		Reasoning:  SyntheticReasoning,
		Confidence: confidence,
	}
}

// generateText writes a short markdown report for a text schema.
func generateText(seed uint64, description *string) *api.Output {
	asked := "(no description)"
	if description != nil && *description != "" {
		asked = *description
		if len(asked) > 200 {
			asked = asked[:200] + "..."
		}
	}
	text := fmt.Sprintf("# Synthetic output\n\n"+
		"This text was generated offline by taskpipe's synthetic processor from a hash of "+
		"the input. It is not research and cites no sources.\n\n"+
		"- Input digest: `%016x`\n- Requested: %s\n", seed, asked)
	low := "low"
	return &api.Output{
		Type:    api.OutputText,
		Content: mustJSON(text),
		Basis:   []api.FieldBasis{syntheticBasis("output", &low)},
	}
}

// autoSchema is the output schema reported for auto-mode synthetic runs.
var autoSchema = json.RawMessage(`{"type":"object","properties":{` +
	`"summary":{"type":"string","description":"A synthetic summary."},` +
	`"input_digest":{"type":"string","description":"Hash of the input."}},` +
	`"required":["summary","input_digest"],"additionalProperties":false}`)

// generateAuto writes the small object of an auto-schema run.
func generateAuto(seed uint64) *api.Output {
	content := fmt.Appendf(nil,
		`{"summary":"synthetic summary %06x, not research","input_digest":"%016x"}`,
		mix(seed)&0xffffff, seed)
	low := "low"
	return &api.Output{
		Type:    api.OutputJSON,
		Content: content,
		Basis: []api.FieldBasis{
			syntheticBasis("summary", &low), syntheticBasis("input_digest", &low),
		},
		OutputSchema: autoSchema,
	}
}
