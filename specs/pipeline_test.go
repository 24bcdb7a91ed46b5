package specs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/taskpipe/taskpipe/api"
)

const goodPipeline = `version: 1
name: sp500-enrich
source:
  parquet: [data/companies.parquet]
key: [symbol]
mapping:
  company_name: name
  website: {column: url}
  country: {value: US}
task:
  processor: lite
  metadata: {team: data}
  input_schema:
    type: json
    json_schema:
      type: object
      properties:
        company_name: {type: string}
        website: {type: string}
        country: {type: string}
      required: [company_name]
  output_schema:
    type: json
    json_schema:
      type: object
      additionalProperties: false
      required: [employees, segments]
      properties:
        employees: {type: integer, description: headcount}
        segments: {type: array, items: {type: string}}
sink:
  duckdb: {database: out.duckdb, table: companies}
`

func TestParsePipeline_Good(t *testing.T) {
	p, err := ParsePipeline([]byte(goodPipeline), "/pipelines")
	if err != nil {
		t.Fatalf("ParsePipeline: %v", err)
	}
	if p.Name != "sp500-enrich" || p.Task.Processor != "lite" {
		t.Errorf("name/processor = %q/%q", p.Name, p.Task.Processor)
	}
	if got := p.Mapping["company_name"]; got.Column != "name" || got.HasValue {
		t.Errorf("bare string mapping = %+v", got)
	}
	if got := p.Mapping["website"]; got.Column != "url" {
		t.Errorf("column mapping = %+v", got)
	}
	if got := p.Mapping["country"]; !got.HasValue || got.Value != "US" {
		t.Errorf("value mapping = %+v", got)
	}
	if p.Target.Engine != EngineEmbedded || p.Target.AddsPerMinute != 2000 ||
		p.Target.APIKeyEnv != "PARALLEL_API_KEY" || p.Target.StateDir != ".taskpipe" {
		t.Errorf("target defaults = %+v", p.Target)
	}
	if p.TaskSpec.OutputSchema.Type != api.SchemaJSON || p.InputSchemaType() != api.SchemaJSON {
		t.Errorf("task spec = %+v", p.TaskSpec)
	}
	cols, err := OutputColumns(p.TaskSpec.OutputSchema)
	if err != nil || len(cols) != 2 || cols[0].Name != "employees" || cols[0].Type.Kind != KindBigint {
		t.Errorf("output columns = %+v, %v", cols, err)
	}
	if got := p.Resolve("data/x.parquet"); got != filepath.Join("/pipelines", "data/x.parquet") {
		t.Errorf("Resolve = %q", got)
	}
	// The input schema object lacks additionalProperties and requires only
	// one of three properties: two warnings.
	if len(p.SpecWarnings) != 2 {
		t.Errorf("spec warnings = %+v", p.SpecWarnings)
	}
}

func TestParsePipeline_Problems(t *testing.T) {
	spec := `version: 2
source:
  parquet: []
  duckdb: {query: "  "}
key: [run_id, a, A]
mapping:
  x: {column: c, value: 1}
  y: {}
task:
  output_schema:
    type: json
    json_schema:
      type: object
      properties:
        status: {type: string, format: date}
target: {engine: server, url: "ftp://x", adds_per_minute: -1}
sink: {duckdb: {table: t}, parquet: {path: ""}}
`
	_, err := ParsePipeline([]byte(spec), t.TempDir())
	if err == nil {
		t.Fatal("ParsePipeline accepted a broken spec")
	}
	want := []string{
		"version: must be 1, not 2",
		"name: must not be empty",
		"source.parquet: must list at least one path",
		"source.duckdb.query: must not be empty",
		"source: must give only one of parquet, csv or duckdb",
		`key.0: "run_id" is a fixed column of the result table; rename it in the source`,
		`key.2: repeats column "A"`,
		"task.processor: must not be empty",
		"task: output_schema.json_schema.properties.status.format: unsupported keyword",
		"mapping.x: give column or value, not both",
		"mapping.y: must name a column or give a value",
		`target.url: must be an http or https URL, not "ftp://x"`,
		"target.adds_per_minute: must be positive",
		"sink.duckdb.database: must not be empty",
		"sink.parquet.path: must not be empty",
	}
	if got := err.Error(); got != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
}

func TestParsePipeline_Strict(t *testing.T) {
	for name, spec := range map[string]string{
		"unknown top field":     goodPipeline + "extra: 1\n",
		"unknown nested field":  strings.Replace(goodPipeline, "table: companies", "table: companies, mode: x", 1),
		"unknown mapping field": strings.Replace(goodPipeline, "{column: url}", "{col: url}", 1),
		"two documents":         goodPipeline + "---\nversion: 1\n",
		"empty":                 "",
	} {
		if _, err := ParsePipeline([]byte(spec), "/"); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestParsePipeline_MappingAgainstInputSchema(t *testing.T) {
	spec := strings.Replace(goodPipeline, "  company_name: name\n", "  ceo: name\n", 1)
	_, err := ParsePipeline([]byte(spec), "/")
	want := "mapping.ceo: is not a property of task.input_schema\n" +
		`mapping: does not fill "company_name", which task.input_schema requires`
	if err == nil || err.Error() != want {
		t.Errorf("err = %v\nwant %s", err, want)
	}
}

func TestParsePipeline_OutputCollision(t *testing.T) {
	spec := strings.Replace(goodPipeline, "employees: {type: integer", "status: {type: integer", 1)
	spec = strings.Replace(spec, "required: [employees, segments]", "required: [status, segments]", 1)
	_, err := ParsePipeline([]byte(spec), "/")
	want := `task.output_schema: output field "status" collides with the fixed column "status"; rename one of them`
	if err == nil || err.Error() != want {
		t.Errorf("err = %v\nwant %s", err, want)
	}
}

func TestLoadPipeline_SpecFile(t *testing.T) {
	dir := t.TempDir()
	specJSON := `{"input_schema":"a company name","output_schema":{"type":"json","json_schema":
		{"type":"object","additionalProperties":false,"required":["ceo"],
		 "properties":{"ceo":{"type":"string"}}}}}`
	if err := os.WriteFile(filepath.Join(dir, "task.json"), []byte(specJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	pipeline := `version: 1
name: ceo
source:
  csv: {paths: [in.csv]}
key: [id]
mapping: {input: name}
task: {spec_file: task.json, processor: base}
target: {engine: parallel}
sink: {parquet: {path: out.parquet}}
`
	path := filepath.Join(dir, "pipeline.yaml")
	if err := os.WriteFile(path, []byte(pipeline), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := LoadPipeline(path)
	if err != nil {
		t.Fatalf("LoadPipeline: %v", err)
	}
	if p.InputSchemaType() != api.SchemaText || p.TaskSpec.OutputSchema.Type != api.SchemaJSON {
		t.Errorf("task spec = %+v", p.TaskSpec)
	}
	if p.Source.CSV.Delimiter != "," || !*p.Source.CSV.Header {
		t.Errorf("csv defaults = %+v", p.Source.CSV)
	}
	if len(p.SpecWarnings) != 0 {
		t.Errorf("warnings = %+v", p.SpecWarnings)
	}

	// A YAML spec file works the same; a missing one names the field.
	yamlSpec := "output_schema: a short report\n"
	if err := os.WriteFile(filepath.Join(dir, "task.yaml"), []byte(yamlSpec), 0o600); err != nil {
		t.Fatal(err)
	}
	p2, err := ParsePipeline([]byte(strings.Replace(pipeline, "task.json", "task.yaml", 1)), dir)
	if err != nil || p2.TaskSpec.OutputSchema.Type != api.SchemaText {
		t.Errorf("yaml spec file: %+v, %v", p2, err)
	}
	_, err = ParsePipeline([]byte(strings.Replace(pipeline, "task.json", "missing.json", 1)), dir)
	if err == nil || !strings.HasPrefix(err.Error(), "task.spec_file: read task spec:") {
		t.Errorf("missing spec file: %v", err)
	}
}

func TestLoadPipeline_DefaultName(t *testing.T) {
	noName := strings.Replace(goodPipeline, "name: sp500-enrich\n", "", 1)
	cases := []struct {
		file, spec, want, wantErr string
	}{
		{file: "p1m.yaml", spec: noName, want: "p1m"},
		{file: "nightly.enrich.yml", spec: noName, want: "nightly.enrich"},
		{file: "pipeline", spec: noName, want: "pipeline"},
		{file: "p1m.yaml", spec: strings.Replace(noName, "version: 1\n", "version: 1\nname: \"\"\n", 1),
			want: "p1m"},
		{file: "p1m.yaml", spec: goodPipeline, want: "sp500-enrich"},
		{file: ".yaml", spec: noName,
			wantErr: `name: must be given: the file name ".yaml" gives no name`},
		{file: " .yaml", spec: noName,
			wantErr: `name: must be given: the file name " .yaml" gives no name`},
		{file: "p1m.yaml", spec: strings.Replace(goodPipeline, "sp500-enrich", `"  "`, 1),
			wantErr: "name: must not be empty"},
	}
	for _, tc := range cases {
		path := filepath.Join(t.TempDir(), tc.file)
		if err := os.WriteFile(path, []byte(tc.spec), 0o600); err != nil {
			t.Fatal(err)
		}
		p, err := LoadPipeline(path)
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("%q: err = %v, want %s", tc.file, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.file, err)
			continue
		}
		if p.Name != tc.want {
			t.Errorf("%q: name = %q, want %q", tc.file, p.Name, tc.want)
		}
	}
}

func TestParsePipeline_SchemaThatDoesNotCompile(t *testing.T) {
	cases := []struct {
		name, from, to, want string
	}{
		{"output $ref to nowhere", "segments: {type: array, items: {type: string}}",
			`segments: {type: array, items: {"$ref": "#/$defs/nope"}}`,
			"task.output_schema: compile json schema: "},
		{"input $ref to nowhere", "country: {type: string}", `country: {"$ref": "#/$defs/nope"}`,
			"task.input_schema: compile json schema: "},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec := strings.Replace(goodPipeline, tc.from, tc.to, 1)
			_, err := ParsePipeline([]byte(spec), "/")
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) ||
				!strings.Contains(err.Error(), "#/$defs/nope") || strings.Contains(err.Error(), "\n") {
				t.Errorf("err = %v, want one problem starting %q naming #/$defs/nope", err, tc.want)
			}
		})
	}
}

func TestParsePipeline_SchemaChecks(t *testing.T) {
	const out = "task: output_schema.json_schema.properties."
	cases := []struct {
		name, from, to string
		wantErr        string
		wantWarning    string
	}{
		{name: "enum values of another type", from: "employees: {type: integer, description: headcount}",
			to: "employees: {type: integer, enum: [a, b]}",
			wantErr: out + `employees.enum.0: "a" is not of the declared type integer` + "\n" +
				out + `employees.enum.1: "b" is not of the declared type integer`},
		{name: "required name of a closed object", from: "required: [employees, segments]",
			to: "required: [employees, segments, zzz]",
			wantErr: `task: output_schema.json_schema.required.2: "zzz" is not a property, and ` +
				"additionalProperties: false forbids any other; no value can match"},
		{name: "required name of an open object",
			from:        "additionalProperties: false\n      required: [employees, segments]",
			to:          "required: [employees, segments, zzz]",
			wantWarning: `output_schema.json_schema.required.2: "zzz" is not a property`},
		{name: "typo of a keyword", from: "description: headcount", to: "descripton: headcount",
			wantWarning: `output_schema.json_schema.properties.employees.descripton: unknown ` +
				`keyword "descripton", ignored (did you mean description?)`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec := strings.Replace(goodPipeline, tc.from, tc.to, 1)
			if spec == goodPipeline {
				t.Fatalf("%q is not in the spec", tc.from)
			}
			p, err := ParsePipeline([]byte(spec), "/")
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Errorf("err = %v\nwant %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePipeline: %v", err)
			}
			found := false
			for _, w := range p.SpecWarnings {
				found = found || w.Message == tc.wantWarning
			}
			if !found {
				t.Errorf("warnings = %q, want one %q", warningMessages(p.SpecWarnings), tc.wantWarning)
			}
		})
	}
}
