package specs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/taskpipe/taskpipe/api"
)

// PipelineVersion is the only version of the pipeline spec format.
const PipelineVersion = 1

// Defaults of a pipeline spec.
const (
	DefaultAddsPerMinute = 2000
	DefaultAPIKeyEnv     = "PARALLEL_API_KEY"
	DefaultStateDir      = ".taskpipe"
	DefaultCSVDelimiter  = ","
)

// Target engines.
const (
	EngineEmbedded = "embedded"
	EngineServer   = "server"
	EngineParallel = "parallel"
)

// Pipeline is a pipeline spec: where rows come from, how they become task
// run inputs, which task runs on them, where the runs execute and where the
// typed results go. It is read from YAML by LoadPipeline or ParsePipeline.
type Pipeline struct {
	Version int                     `yaml:"version"`
	Name    string                  `yaml:"name"`
	Source  Source                  `yaml:"source"`
	Key     []string                `yaml:"key"`
	Mapping map[string]MappingEntry `yaml:"mapping"`
	Task    Task                    `yaml:"task"`
	Target  Target                  `yaml:"target"`
	Sink    Sink                    `yaml:"sink"`

	// Dir is the folder of the pipeline file; Resolve joins relative paths
	// onto it.
	Dir string `yaml:"-"`
	// TaskSpec is the task spec the pipeline runs, read from task.spec_file
	// or built from the inline schemas.
	TaskSpec api.TaskSpec `yaml:"-"`
	// SpecWarnings are the warnings ValidateTaskSpec gave for TaskSpec.
	SpecWarnings []api.Warning `yaml:"-"`

	// fileName is the base name of the pipeline file, which gives the
	// default name; empty when the spec was not read from a file.
	fileName string
}

// Source names where input rows come from: exactly one of its fields.
type Source struct {
	// Parquet lists Parquet files or globs.
	Parquet []string `yaml:"parquet"`
	// CSV reads delimited text files.
	CSV *CSVSource `yaml:"csv"`
	// DuckDB runs a query against a DuckDB database.
	DuckDB *DuckDBSource `yaml:"duckdb"`
}

// CSVSource reads CSV files.
type CSVSource struct {
	// Paths are files or globs.
	Paths []string `yaml:"paths"`
	// Delimiter is one character; "," when empty.
	Delimiter string `yaml:"delimiter"`
	// Header says the first line names the columns; true when unset.
	Header *bool `yaml:"header"`
}

// DuckDBSource reads the result of a query.
type DuckDBSource struct {
	// Database is a DuckDB file; empty means an in-memory database (the
	// query then reads files itself, e.g. with read_parquet).
	Database string `yaml:"database"`
	// Query is the SQL that yields the rows.
	Query string `yaml:"query"`
}

// MappingEntry says where one task input field takes its value: a source
// column or a constant. In YAML a bare string is a column name.
type MappingEntry struct {
	// Column is the source column, or empty for a constant.
	Column string
	// Value is the constant (string, number, boolean, list or map) when
	// HasValue is set.
	Value    any
	HasValue bool
}

// UnmarshalYAML reads `column_name`, `{column: name}` or `{value: const}`.
func (m *MappingEntry) UnmarshalYAML(node *yaml.Node) error {
	switch node.Kind {
	case yaml.ScalarNode:
		if node.Tag != "!!str" {
			return fmt.Errorf("line %d: a mapping entry is a column name, {column: name} or "+
				"{value: constant}", node.Line)
		}
		m.Column = node.Value
		return nil
	case yaml.MappingNode:
	default:
		return fmt.Errorf("line %d: a mapping entry is a column name, {column: name} or "+
			"{value: constant}", node.Line)
	}
	for i := 0; i+1 < len(node.Content); i += 2 {
		key, val := node.Content[i], node.Content[i+1]
		switch key.Value {
		case "column":
			if err := val.Decode(&m.Column); err != nil {
				return err
			}
		case "value":
			var v any
			if err := val.Decode(&v); err != nil {
				return err
			}
			c, err := jsonCompatible(v)
			if err != nil {
				return fmt.Errorf("line %d: %w", val.Line, err)
			}
			m.Value, m.HasValue = c, true
		default:
			return fmt.Errorf("line %d: field %s not found in mapping entry", key.Line, key.Value)
		}
	}
	return nil
}

// Task is the task every row runs.
type Task struct {
	// SpecFile is a JSON or YAML file holding a task spec in the Task API's
	// format ({input_schema, output_schema}), relative to the pipeline file.
	SpecFile string `yaml:"spec_file"`
	// InputSchema and OutputSchema give the spec inline instead, in the
	// same format (a string, or {type, json_schema | description}).
	InputSchema  *InlineSchema `yaml:"input_schema"`
	OutputSchema *InlineSchema `yaml:"output_schema"`
	// Processor is the processor every run uses, e.g. base or core-fast.
	Processor string `yaml:"processor"`
	// Metadata is attached to every run.
	Metadata map[string]any `yaml:"metadata"`
}

// InlineSchema is a schema written inline in a pipeline spec, kept as YAML
// until the task spec is resolved.
type InlineSchema struct {
	node *yaml.Node
}

// UnmarshalYAML keeps the schema's node. (A plain yaml.Node field would be
// checked against the strict decoder's known fields.)
func (s *InlineSchema) UnmarshalYAML(node *yaml.Node) error {
	s.node = node
	return nil
}

// Target is where runs execute.
type Target struct {
	// Engine is embedded (an in-process engine, the default), server (a
	// taskpipe server at URL) or parallel (Parallel's hosted API).
	Engine string `yaml:"engine"`
	// URL is the base URL of a server; required for server. For parallel
	// an empty URL leaves the choice to the client.
	URL string `yaml:"url"`
	// APIKeyEnv names the environment variable holding the API key;
	// PARALLEL_API_KEY when empty.
	APIKeyEnv string `yaml:"api_key_env"`
	// AddsPerMinute caps the runs created per minute; 2000 when unset.
	AddsPerMinute int `yaml:"adds_per_minute"`
	// StateDir holds the pipeline's resume state, relative to the pipeline
	// file; .taskpipe when empty.
	StateDir string `yaml:"state_dir"`
}

// Sink names where results go: at least one of its fields.
type Sink struct {
	DuckDB  *DuckDBSink  `yaml:"duckdb"`
	Parquet *ParquetSink `yaml:"parquet"`
}

// DuckDBSink writes results into a table of a DuckDB database.
type DuckDBSink struct {
	Database string `yaml:"database"`
	Table    string `yaml:"table"`
}

// ParquetSink writes results into one Parquet file.
type ParquetSink struct {
	Path string `yaml:"path"`
}

// LoadPipeline reads, resolves and validates the pipeline spec at path.
func LoadPipeline(path string) (*Pipeline, error) {
	return LoadPipelineWith(path, Overrides{})
}

// Overrides replace fields of a pipeline spec before it is validated, as
// command-line flags do.
type Overrides struct {
	// Engine replaces target.engine, URL target.url, Processor
	// task.processor and StateDir target.state_dir when not empty.
	Engine, URL, Processor, StateDir string
}

// LoadPipelineWith is LoadPipeline with overrides applied before the spec
// is validated.
func LoadPipelineWith(path string, o Overrides) (*Pipeline, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read pipeline spec: %w", err)
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("read pipeline spec: %w", err)
	}
	return parsePipeline(data, dir, filepath.Base(path), o)
}

// ParsePipeline decodes a pipeline spec strictly (unknown fields are
// errors), applies defaults, resolves its task spec (spec files are read
// relative to dir) and validates it. The error lists every problem found.
func ParsePipeline(data []byte, dir string) (*Pipeline, error) {
	return parsePipeline(data, dir, "", Overrides{})
}

// parsePipeline is ParsePipeline with overrides; fileName, the pipeline
// file's base name, gives the default name (empty: name is required).
func parsePipeline(data []byte, dir, fileName string, o Overrides) (*Pipeline, error) {
	var p Pipeline
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("decode pipeline spec: the file is empty")
		}
		return nil, fmt.Errorf("decode pipeline spec: %w", DescribeYAMLError(data, err))
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("decode pipeline spec: more than one YAML document")
	}
	p.Dir, p.fileName = dir, fileName
	if o.Engine != "" {
		p.Target.Engine = o.Engine
	}
	if o.URL != "" {
		p.Target.URL = o.URL
	}
	if o.Processor != "" {
		p.Task.Processor = o.Processor
	}
	if o.StateDir != "" {
		p.Target.StateDir = o.StateDir
	}
	p.applyDefaults()
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// applyDefaults fills the optional fields.
func (p *Pipeline) applyDefaults() {
	if p.Name == "" && p.fileName != "" {
		p.Name = strings.TrimSuffix(p.fileName, filepath.Ext(p.fileName))
	}
	if p.Target.Engine == "" {
		p.Target.Engine = EngineEmbedded
	}
	if p.Target.AddsPerMinute == 0 {
		p.Target.AddsPerMinute = DefaultAddsPerMinute
	}
	if p.Target.APIKeyEnv == "" {
		p.Target.APIKeyEnv = DefaultAPIKeyEnv
	}
	if p.Target.StateDir == "" {
		p.Target.StateDir = DefaultStateDir
	}
	if p.Source.CSV != nil {
		if p.Source.CSV.Delimiter == "" {
			p.Source.CSV.Delimiter = DefaultCSVDelimiter
		}
		if p.Source.CSV.Header == nil {
			header := true
			p.Source.CSV.Header = &header
		}
	}
}

// Resolve returns path joined onto the pipeline's folder unless absolute.
func (p *Pipeline) Resolve(path string) string {
	if path == "" || filepath.IsAbs(path) || p.Dir == "" {
		return path
	}
	return filepath.Join(p.Dir, path)
}

// InputSchemaType is the type of the resolved task spec's input schema, or
// empty when it has none.
func (p *Pipeline) InputSchemaType() string {
	if p.TaskSpec.InputSchema == nil {
		return ""
	}
	return p.TaskSpec.InputSchema.Type
}

// jsonCompatible converts a value decoded from YAML into one that encodes
// as JSON: maps with non-string keys are refused.
func jsonCompatible(v any) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			c, err := jsonCompatible(e)
			if err != nil {
				return nil, err
			}
			out[k] = c
		}
		return out, nil
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			ks, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("map key %v is not a string", k)
			}
			c, err := jsonCompatible(e)
			if err != nil {
				return nil, err
			}
			out[ks] = c
		}
		return out, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			c, err := jsonCompatible(e)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	}
	return v, nil
}

// yamlToJSON decodes YAML (or JSON) text into JSON text.
func yamlToJSON(node *yaml.Node) (json.RawMessage, error) {
	if node == nil {
		return json.RawMessage("null"), nil
	}
	var v any
	if err := node.Decode(&v); err != nil {
		return nil, err
	}
	c, err := jsonCompatible(v)
	if err != nil {
		return nil, err
	}
	return json.Marshal(c)
}

// isHTTPURL reports whether s is an absolute http or https URL.
func isHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" &&
		!strings.ContainsAny(s, " \t\n")
}
