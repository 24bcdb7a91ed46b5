package specs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/taskpipe/taskpipe/api"
)

// problems collects the problems of a pipeline spec, each naming its field.
type problems []error

// add records a problem at field.
func (ps *problems) add(field, format string, args ...any) {
	*ps = append(*ps, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
}

// Validate checks the whole spec and resolves its task spec into TaskSpec
// (and SpecWarnings). It returns every problem at once, each naming its
// field: `source.duckdb.query: must not be empty`.
func (p *Pipeline) Validate() error {
	var ps problems
	if p.Version != PipelineVersion {
		ps.add("version", "must be %d, not %d", PipelineVersion, p.Version)
	}
	p.validateName(&ps)
	p.validateSource(&ps)
	p.validateKey(&ps)
	p.validateTask(&ps)
	p.validateMapping(&ps)
	p.validateTarget(&ps)
	p.validateSink(&ps)
	return errors.Join(ps...)
}

// validateName checks the pipeline's name, given or taken from the file.
func (p *Pipeline) validateName(ps *problems) {
	if strings.TrimSpace(p.Name) != "" {
		return
	}
	if p.fileName != "" && p.Name == strings.TrimSuffix(p.fileName, filepath.Ext(p.fileName)) {
		ps.add("name", "must be given: the file name %q gives no name", p.fileName)
		return
	}
	ps.add("name", "must not be empty")
}

// validateSource checks that exactly one source is given and complete.
func (p *Pipeline) validateSource(ps *problems) {
	s := p.Source
	n := 0
	if s.Parquet != nil {
		n++
		if len(s.Parquet) == 0 {
			ps.add("source.parquet", "must list at least one path")
		}
		for i, path := range s.Parquet {
			if strings.TrimSpace(path) == "" {
				ps.add(fmt.Sprintf("source.parquet.%d", i), "must not be empty")
			}
		}
	}
	if s.CSV != nil {
		n++
		if len(s.CSV.Paths) == 0 {
			ps.add("source.csv.paths", "must list at least one path")
		}
		for i, path := range s.CSV.Paths {
			if strings.TrimSpace(path) == "" {
				ps.add(fmt.Sprintf("source.csv.paths.%d", i), "must not be empty")
			}
		}
		if d := s.CSV.Delimiter; d != "" && utf8.RuneCountInString(d) != 1 {
			ps.add("source.csv.delimiter", "must be one character, not %q", d)
		}
	}
	if s.DuckDB != nil {
		n++
		if strings.TrimSpace(s.DuckDB.Query) == "" {
			ps.add("source.duckdb.query", "must not be empty")
		}
	}
	switch {
	case n == 0:
		ps.add("source", "must give one of parquet, csv or duckdb")
	case n > 1:
		ps.add("source", "must give only one of parquet, csv or duckdb")
	}
}

// validateKey checks the key columns, and that their names leave room for
// the result table's fixed columns.
func (p *Pipeline) validateKey(ps *problems) {
	if len(p.Key) == 0 {
		ps.add("key", "must name at least one column")
		return
	}
	seen := map[string]bool{}
	for i, k := range p.Key {
		field := fmt.Sprintf("key.%d", i)
		low := strings.ToLower(k)
		switch {
		case strings.TrimSpace(k) == "":
			ps.add(field, "must not be empty")
		case seen[low]:
			ps.add(field, "repeats column %q", k)
		case fixedColumnName(low):
			ps.add(field, "%q is a fixed column of the result table; rename it in the source", k)
		}
		seen[low] = true
	}
}

// fixedColumnName reports whether a lower-case name is a fixed column.
func fixedColumnName(low string) bool {
	for _, c := range fixedHead {
		if c.Name == low {
			return true
		}
	}
	for _, c := range fixedTail {
		if c.Name == low {
			return true
		}
	}
	return false
}

// validateTask resolves the task spec and checks it and the processor.
func (p *Pipeline) validateTask(ps *problems) {
	t := p.Task
	if strings.TrimSpace(t.Processor) == "" {
		ps.add("task.processor", "must not be empty")
	}
	for k, v := range t.Metadata {
		switch v.(type) {
		case string, int, int64, float64, bool:
		default:
			ps.add("task.metadata."+k, "must be a string, number or boolean")
		}
	}

	// The spec comes from a file or inline, not both.
	var spec api.TaskSpec
	inline := t.InputSchema != nil || t.OutputSchema != nil
	switch {
	case t.SpecFile != "" && inline:
		ps.add("task", "give spec_file or inline input_schema/output_schema, not both")
		return
	case t.SpecFile != "":
		s, err := readTaskSpecFile(p.Resolve(t.SpecFile))
		if err != nil {
			ps.add("task.spec_file", "%v", err)
			return
		}
		spec = s
	case t.OutputSchema == nil:
		ps.add("task.output_schema", "must be given (or task.spec_file)")
		return
	default:
		s, ok := inlineTaskSpec(t, ps)
		if !ok {
			return
		}
		spec = s
	}

	// The task spec obeys the Task API's rules, and its output columns
	// must not collide with the fixed columns.
	warnings, err := validateTaskSpec(spec, true)
	for _, e := range unjoin(err) {
		ps.add("task", "%v", e)
	}
	p.TaskSpec, p.SpecWarnings = spec, warnings
	if err == nil {
		compileTaskSpec(spec, ps)
	}
	if err == nil {
		// Key problems are validateKey's to report; only output names here.
		key := make([]Column, 0, len(p.Key))
		seen := map[string]bool{}
		for _, k := range p.Key {
			low := strings.ToLower(k)
			if k != "" && !seen[low] && !fixedColumnName(low) {
				key = append(key, Column{Name: k, Type: Varchar})
			}
			seen[low] = true
		}
		if len(key) > 0 {
			if _, err := NewTable(key, spec.OutputSchema); err != nil {
				for _, e := range unjoin(errors.Unwrap(err)) {
					ps.add("task.output_schema", "%v", e)
				}
			}
		}
	}
}

// compileTaskSpec compiles the json schemas of a task spec as the engine
// will, so that a schema the validator cannot use (a $ref to nowhere) is a
// spec error, not a failure after the task group is created.
func compileTaskSpec(spec api.TaskSpec, ps *problems) {
	if in := spec.InputSchema; in != nil && in.Type == api.SchemaJSON {
		if _, err := CompileSchema(in.JSONSchema); err != nil {
			ps.add("task.input_schema", "%v", err)
		}
	}
	if out := spec.OutputSchema; out.Type == api.SchemaJSON {
		if _, err := CompileSchema(out.JSONSchema); err != nil {
			ps.add("task.output_schema", "%v", err)
		}
	}
}

// inlineTaskSpec builds the task spec from the inline schemas.
func inlineTaskSpec(t Task, ps *problems) (api.TaskSpec, bool) {
	var spec api.TaskSpec
	ok := true
	raw, err := yamlToJSON(t.OutputSchema.node)
	if err == nil {
		err = json.Unmarshal(raw, &spec.OutputSchema)
	}
	if err != nil {
		ps.add("task.output_schema", "%v", err)
		ok = false
	}
	if t.InputSchema != nil {
		raw, err := yamlToJSON(t.InputSchema.node)
		var in api.Schema
		if err == nil {
			err = json.Unmarshal(raw, &in)
		}
		if err != nil {
			ps.add("task.input_schema", "%v", err)
			ok = false
		}
		spec.InputSchema = &in
	}
	return spec, ok
}

// readTaskSpecFile reads a task spec from a JSON or YAML file.
func readTaskSpecFile(path string) (api.TaskSpec, error) {
	var spec api.TaskSpec
	data, err := os.ReadFile(path)
	if err != nil {
		return spec, fmt.Errorf("read task spec: %w", err)
	}
	var node yaml.Node
	if err := yaml.Unmarshal(data, &node); err != nil {
		return spec, fmt.Errorf("decode task spec %s: %w", path, err)
	}
	raw, err := yamlToJSON(&node)
	if err != nil {
		return spec, fmt.Errorf("decode task spec %s: %w", path, err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		return spec, fmt.Errorf("decode task spec %s: %w", path, err)
	}
	if spec.OutputSchema.Type == "" {
		return spec, fmt.Errorf("decode task spec %s: output_schema must be given", path)
	}
	return spec, nil
}

// validateMapping checks each mapping entry and, for a json input schema,
// that the mapping and the schema's properties agree.
func (p *Pipeline) validateMapping(ps *problems) {
	if len(p.Mapping) == 0 {
		ps.add("mapping", "must map at least one task input field")
		return
	}
	for _, name := range sortedKeys(p.Mapping) {
		e := p.Mapping[name]
		field := "mapping." + name
		switch {
		case strings.TrimSpace(name) == "":
			ps.add("mapping", "has an empty input field name")
		case e.HasValue && e.Column != "":
			ps.add(field, "give column or value, not both")
		case !e.HasValue && strings.TrimSpace(e.Column) == "":
			ps.add(field, "must name a column or give a value")
		}
	}

	// A json input schema names the fields the mapping may fill.
	in := p.TaskSpec.InputSchema
	if in == nil || in.Type != api.SchemaJSON {
		if in != nil && in.Type == api.SchemaText && len(p.Mapping) != 1 {
			ps.add("mapping", "a text input_schema takes exactly one field, not %d", len(p.Mapping))
		}
		return
	}
	doc, err := decodeJSON(in.JSONSchema)
	if err != nil {
		return // reported by the task spec
	}
	root, _ := doc.(map[string]any)
	props, _ := root["properties"].(map[string]any)
	for _, name := range sortedKeys(p.Mapping) {
		if _, ok := props[name]; !ok {
			ps.add("mapping."+name, "is not a property of task.input_schema")
		}
	}
	required, _ := root["required"].([]any)
	for _, r := range required {
		if s, ok := r.(string); ok {
			if _, mapped := p.Mapping[s]; !mapped {
				ps.add("mapping", "does not fill %q, which task.input_schema requires", s)
			}
		}
	}
}

// validateTarget checks where runs execute.
func (p *Pipeline) validateTarget(ps *problems) {
	t := p.Target
	switch t.Engine {
	case EngineEmbedded:
		if t.URL != "" {
			ps.add("target.url", "not used by the embedded engine")
		}
	case EngineServer:
		if t.URL == "" {
			ps.add("target.url", "must be given for engine server")
		}
	case EngineParallel:
		if t.AddsPerMinute > DefaultAddsPerMinute {
			ps.add("target.adds_per_minute", "must be at most %d, Parallel's create limit",
				DefaultAddsPerMinute)
		}
	default:
		ps.add("target.engine", "must be embedded, server or parallel, not %q", t.Engine)
	}
	if t.URL != "" && !isHTTPURL(t.URL) {
		ps.add("target.url", "must be an http or https URL, not %q", t.URL)
	}
	if t.AddsPerMinute < 0 {
		ps.add("target.adds_per_minute", "must be positive")
	}
	if strings.ContainsAny(t.APIKeyEnv, "= \t\n") {
		ps.add("target.api_key_env", "must be an environment variable name")
	}
}

// validateSink checks that results go somewhere.
func (p *Pipeline) validateSink(ps *problems) {
	s := p.Sink
	if s.DuckDB == nil && s.Parquet == nil {
		ps.add("sink", "must give duckdb, parquet or both")
	}
	if s.DuckDB != nil {
		if strings.TrimSpace(s.DuckDB.Database) == "" {
			ps.add("sink.duckdb.database", "must not be empty")
		}
		if strings.TrimSpace(s.DuckDB.Table) == "" {
			ps.add("sink.duckdb.table", "must not be empty")
		}
	}
	if s.Parquet != nil && strings.TrimSpace(s.Parquet.Path) == "" {
		ps.add("sink.parquet.path", "must not be empty")
	}
}

// unjoin splits an errors.Join error into its parts.
func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
