package specs

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/taskpipe/taskpipe/api"
)

// jsonSpec builds a task spec whose output is the given JSON schema.
func jsonSpec(schema string) api.TaskSpec {
	return api.TaskSpec{OutputSchema: api.Schema{Type: api.SchemaJSON,
		JSONSchema: json.RawMessage(schema)}}
}

const goodSchema = `{"type":"object","additionalProperties":false,
 "required":["name","revenue","tags","hq","ceo"],
 "properties":{
  "name":{"type":"string","description":"legal name"},
  "revenue":{"type":["number","null"]},
  "tags":{"type":"array","items":{"type":"string","enum":["a","b"]}},
  "hq":{"type":"object","additionalProperties":false,"required":["city"],
        "properties":{"city":{"type":"string"}}},
  "ceo":{"anyOf":[{"type":"string"},{"type":"null"}]}}}`

func TestValidateTaskSpec_Good(t *testing.T) {
	warnings, err := ValidateTaskSpec(jsonSpec(goodSchema))
	if err != nil {
		t.Fatalf("ValidateTaskSpec: %v", err)
	}
	if len(warnings) != 0 {
		t.Fatalf("warnings = %+v, want none", warnings)
	}
}

func TestValidateTaskSpec_TextAndAuto(t *testing.T) {
	d := "a short report"
	for _, spec := range []api.TaskSpec{
		{OutputSchema: api.Schema{Type: api.SchemaText, Description: &d}},
		{OutputSchema: api.Schema{Type: api.SchemaText}},
		{OutputSchema: api.Schema{Type: api.SchemaAuto}},
		{OutputSchema: api.Schema{Type: api.SchemaAuto},
			InputSchema: &api.Schema{Type: api.SchemaText, Description: &d}},
	} {
		if _, err := ValidateTaskSpec(spec); err != nil {
			t.Errorf("ValidateTaskSpec(%+v): %v", spec, err)
		}
	}
	bad := api.TaskSpec{OutputSchema: api.Schema{Type: api.SchemaText},
		InputSchema: &api.Schema{Type: api.SchemaAuto}}
	_, err := ValidateTaskSpec(bad)
	wantProblems(t, err, "input_schema.type: must be json or text, not auto")
	_, err = ValidateTaskSpec(api.TaskSpec{OutputSchema: api.Schema{Type: "xml"}})
	wantProblems(t, err, `output_schema.type: must be json, text or auto, not "xml"`)
}

// wantProblems checks that err wraps api.ErrInvalid and holds exactly the
// given problems, in order.
func wantProblems(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil, want %q", want)
	}
	if !errors.Is(err, api.ErrInvalid) {
		t.Errorf("err does not wrap api.ErrInvalid: %v", err)
	}
	if got := api.HTTPStatus(err); got != 422 {
		t.Errorf("HTTPStatus = %d, want 422", got)
	}
	got := strings.Split(err.Error(), "\n")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n got %q\nwant %q", got, want)
	}
}

func TestValidateTaskSpec_Errors(t *testing.T) {
	const p = "output_schema.json_schema"
	tests := []struct {
		name   string
		schema string
		want   []string
	}{
		{"root not object", `{"type":"string"}`, []string{
			p + ".type: the root must have type object",
			p + ".properties: the root must have properties"}},
		{"root anyOf", `{"type":"object","properties":{},"anyOf":[{"type":"object"}]}`,
			[]string{p + ".anyOf: not allowed at the root"}},
		{"not an object", `[1]`, []string{p + ": must be a JSON object"}},
		{"invalid json", `{"type":`, []string{p + ": is not valid JSON: unexpected EOF"}},
		{"unsupported keywords", `{"type":"object","properties":{
			"revenue":{"type":"number","minimum":0,"format":"x"},
			"tags":{"type":"array","maxItems":3,"items":{"type":"string","pattern":"a"}}}}`,
			[]string{
				p + ".properties.revenue.format: unsupported keyword",
				p + ".properties.revenue.minimum: unsupported keyword",
				p + ".properties.tags.items.pattern: unsupported keyword",
				p + ".properties.tags.maxItems: unsupported keyword"}},
		{"bare null", `{"type":"object","properties":{"x":{"type":"null"}}}`, []string{
			p + ".properties.x.type: null is only allowed inside a union (anyOf or a type array)"}},
		{"null-only type array", `{"type":"object","properties":{"x":{"type":["null"]}}}`,
			[]string{p + ".properties.x.type: null is only allowed inside a union with another type"}},
		{"unknown type", `{"type":"object","properties":{"x":{"type":"date"}}}`,
			[]string{p + `.properties.x.type: unknown type "date"`}},
		{"too deep", nested(6), []string{
			p + ".properties.l1.properties.l2.properties.l3.properties.l4.properties.l5: " +
				"objects nest 6 levels deep, more than 5"}},
		{"too many properties", manyProperties(101), []string{
			p + ": declares 101 properties, more than 100"}},
		{"too many enum values", enumSchema(2, 251, 1), []string{
			p + ": has 502 enum values, more than 500"}},
		{"large enum too long", enumSchema(1, 300, 30), []string{
			p + ".properties.e0.enum: has 300 values totalling 9000 characters; " +
				"enums of more than 250 values may total at most 7500"}},
		{"long strings", longDescriptions(), []string{
			"task_spec: is 25208 characters long, more than 15000",
			p + ": names, descriptions and enum strings total 25002 characters, more than 25000"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ValidateTaskSpec(jsonSpec(tc.schema))
			wantProblems(t, err, tc.want...)
		})
	}
}

func TestValidateTaskSpec_NestingAtLimit(t *testing.T) {
	if _, err := ValidateTaskSpec(jsonSpec(nested(5))); err != nil {
		t.Fatalf("depth 5: %v", err)
	}
}

func TestValidateTaskSpec_SpecTooLong(t *testing.T) {
	d := strings.Repeat("x", MaxSpecChars)
	_, err := ValidateTaskSpec(api.TaskSpec{OutputSchema: api.Schema{Type: api.SchemaText,
		Description: &d}})
	wantProblems(t, err, fmt.Sprintf("task_spec: is %d characters long, more than 15000",
		len(d)+len(`{"output_schema":{"type":"text","description":""}}`)))
}

func TestValidateTaskSpec_InputSchema(t *testing.T) {
	spec := jsonSpec(goodSchema)
	spec.InputSchema = &api.Schema{Type: api.SchemaJSON,
		JSONSchema: json.RawMessage(`{"type":"object","properties":{"n":{"type":"string","maxLength":3}}}`)}
	warnings, err := ValidateTaskSpec(spec)
	wantProblems(t, err, "input_schema.json_schema.properties.n.maxLength: unsupported keyword")
	if len(warnings) != 2 {
		t.Errorf("warnings = %+v, want 2 for the input schema", warnings)
	}
}

func TestValidateTaskSpec_Warnings(t *testing.T) {
	schema := `{"type":"object","required":["sources"],"properties":{
		"sources":{"type":"array","items":{"type":"string"}},
		"confidence":{"type":"string"},
		"hq":{"type":"object","additionalProperties":false,"properties":{"city":{"type":"string"}}}}}`
	warnings, err := ValidateTaskSpec(jsonSpec(schema))
	if err != nil {
		t.Fatalf("ValidateTaskSpec: %v", err)
	}
	var got []string
	for _, w := range warnings {
		if w.Type != api.WarningSpec {
			t.Errorf("warning type = %q", w.Type)
		}
		got = append(got, w.Message)
	}
	const p = "output_schema.json_schema"
	want := []string{
		p + ".properties.confidence: the basis of every run already gives confidence; name the field otherwise",
		p + ".properties.sources: the basis of every run already gives sources; name the field otherwise",
		p + ".properties.hq.required: properties not in required: city",
		p + ": object does not set additionalProperties: false",
		p + ".required: properties not in required: confidence, hq",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings:\n got %q\nwant %q", got, want)
	}
}

func TestSpecHash(t *testing.T) {
	a := jsonSpec(`{"type":"object","properties":{"a":{"type":"string"}}}`)
	b := jsonSpec(`{ "properties": {"a": {"type": "string"}}, "type": "object" }`)
	c := jsonSpec(`{"type":"object","properties":{"b":{"type":"string"}}}`)
	if SpecHash(a) != SpecHash(b) {
		t.Errorf("equal specs hash differently: %s %s", SpecHash(a), SpecHash(b))
	}
	if SpecHash(a) == SpecHash(c) {
		t.Errorf("different specs hash alike")
	}
	if len(SpecHash(a)) != 64 {
		t.Errorf("hash %q is not 64 hex digits", SpecHash(a))
	}
}

func TestCompileSchema_ValidateValue(t *testing.T) {
	s, err := CompileSchema(json.RawMessage(goodSchema))
	if err != nil {
		t.Fatalf("CompileSchema: %v", err)
	}
	again, _ := CompileSchema(json.RawMessage(goodSchema))
	if again != s {
		t.Errorf("second compile was not served from the cache")
	}
	good := `{"name":"Acme","revenue":null,"tags":["a"],"hq":{"city":"Oslo"},"ceo":null}`
	if err := s.ValidateJSON(json.RawMessage(good)); err != nil {
		t.Errorf("ValidateJSON(good): %v", err)
	}
	var v any
	_ = json.Unmarshal([]byte(good), &v) // float64 numbers
	if err := s.ValidateValue(v); err != nil {
		t.Errorf("ValidateValue(good): %v", err)
	}
	bad := `{"name":"Acme","revenue":"ten","tags":["c"],"hq":{"city":"Oslo","x":1},"ceo":null}`
	err = s.ValidateJSON(json.RawMessage(bad))
	var ve *ValueError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v, want *ValueError", err)
	}
	for _, field := range []string{"revenue:", "tags.0:", "hq:"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error %q does not name %s", err, field)
		}
	}
	if _, err := CompileSchema(json.RawMessage(`{"$ref":"file:///etc/passwd"}`)); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("a schema referring to a file compiled: %v", err)
	}
}

func TestCompileSchema_Concurrent(t *testing.T) {
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			schema := fmt.Sprintf(`{"type":"object","properties":{"f%d":{"type":"integer"}}}`, i%3)
			s, err := CompileSchema(json.RawMessage(schema))
			if err != nil {
				t.Error(err)
				return
			}
			for range 100 {
				if err := s.ValidateJSON(json.RawMessage(fmt.Sprintf(`{"f%d":1.5}`, i%3))); err == nil {
					t.Error("1.5 passed as an integer")
					return
				}
			}
		}()
	}
	wg.Wait()
}

// pipelineSchema is shaped like the input schemas of our pipelines: a
// closed object of a few strings, an integer, a boolean, an enum and an
// array of strings.
const pipelineSchema = `{"type":"object","additionalProperties":false,
 "required":["company_name","ticker","employees","listed","tier","tags"],
 "properties":{
  "company_name":{"type":"string","description":"The company's name"},
  "ticker":{"type":["string","null"]},
  "employees":{"type":"integer"},
  "listed":{"type":"boolean"},
  "tier":{"type":"string","enum":["mega","large","mid","small"]},
  "tags":{"type":"array","items":{"type":"string"}}}}`

// pipelineInput is a valid value of pipelineSchema.
const pipelineInput = `{"company_name":"Acme Corp","ticker":"ACME","employees":12000,` +
	`"listed":true,"tier":"large","tags":["industrials","machinery"]}`

// BenchmarkSchema_ValidateValue checks decoded values: goodSchema's anyOf
// takes the full validator, pipelineSchema the fast checker, with numbers as
// float64 (encoding/json, go-json) or json.Number (decodeJSON).
func BenchmarkSchema_ValidateValue(b *testing.B) {
	for _, bc := range []struct {
		name, schema, value string
		useNumber           bool
	}{
		{"anyOf", goodSchema,
			`{"name":"Acme","revenue":1.5,"tags":["a","b"],"hq":{"city":"Oslo"},"ceo":"X"}`, false},
		{"pipeline/float64", pipelineSchema, pipelineInput, false},
		{"pipeline/number", pipelineSchema, pipelineInput, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := CompileSchema(json.RawMessage(bc.schema))
			if err != nil {
				b.Fatal(err)
			}
			var v any
			if bc.useNumber {
				v, err = decodeJSON([]byte(bc.value))
			} else {
				err = json.Unmarshal([]byte(bc.value), &v)
			}
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := s.ValidateValue(v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSchema_ValidateJSON checks JSON documents as the pipeline does for
// every row's input: a valid one, and one that breaks the schema and so pays
// for the error.
func BenchmarkSchema_ValidateJSON(b *testing.B) {
	s, err := CompileSchema(json.RawMessage(pipelineSchema))
	if err != nil {
		b.Fatal(err)
	}
	valid := []byte(pipelineInput)
	invalid := []byte(`{"company_name":"Acme Corp","ticker":"ACME","employees":1.5,` +
		`"listed":true,"tier":"large","tags":["industrials",7]}`)
	b.Run("valid", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := s.ValidateJSON(valid); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("invalid", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := s.ValidateJSON(invalid); err == nil {
				b.Fatal("invalid input passed")
			}
		}
	})
}

// nested returns a schema whose objects nest depth levels deep, the root
// being level 1.
func nested(depth int) string {
	s := `{"type":"string"}`
	for k := depth; k >= 1; k-- {
		s = fmt.Sprintf(`{"type":"object","additionalProperties":false,"required":["l%d"],`+
			`"properties":{"l%d":%s}}`, k, k, s)
	}
	return s
}

// manyProperties returns a flat schema of n properties.
func manyProperties(n int) string {
	var props, req []string
	for i := range n {
		props = append(props, fmt.Sprintf(`"p%d":{"type":"string"}`, i))
		req = append(req, fmt.Sprintf(`"p%d"`, i))
	}
	return `{"type":"object","additionalProperties":false,"required":[` + strings.Join(req, ",") +
		`],"properties":{` + strings.Join(props, ",") + `}}`
}

// enumSchema returns a schema of count enum properties of n values each,
// every value width characters long.
func enumSchema(count, n, width int) string {
	var props, req []string
	for e := range count {
		var vals []string
		for i := range n {
			v := fmt.Sprintf("%0*d", width, i)
			if width == 1 {
				v = fmt.Sprintf("%d", i)
			}
			vals = append(vals, `"`+v+`"`)
		}
		props = append(props, fmt.Sprintf(`"e%d":{"type":"string","enum":[%s]}`, e,
			strings.Join(vals, ",")))
		req = append(req, fmt.Sprintf(`"e%d"`, e))
	}
	return `{"type":"object","additionalProperties":false,"required":[` + strings.Join(req, ",") +
		`],"properties":{` + strings.Join(props, ",") + `}}`
}

// longDescriptions returns a schema whose strings total 25,002 characters:
// two property names "a" and "b" and two descriptions of 12,500.
func longDescriptions() string {
	d := strings.Repeat("d", 12500)
	return `{"type":"object","additionalProperties":false,"required":["a","b"],"properties":{` +
		`"a":{"type":"string","description":"` + d + `"},` +
		`"b":{"type":"string","description":"` + d + `"}}}`
}

// warningMessages returns the messages of warnings.
func warningMessages(warnings []api.Warning) []string {
	var msgs []string
	for _, w := range warnings {
		msgs = append(msgs, w.Message)
	}
	return msgs
}

func TestValidateTaskSpec_UnmatchableParts(t *testing.T) {
	const p = "output_schema.json_schema"
	tests := []struct {
		name   string
		schema string
		want   []string // problems of a pipeline, warnings of the Task API
	}{
		{"enum of another type", `{"type":"object","additionalProperties":false,"required":["n"],
			"properties":{"n":{"type":"integer","enum":["a",2,2.0,2.5,"b"]}}}`, []string{
			p + `.properties.n.enum.0: "a" is not of the declared type integer`,
			p + `.properties.n.enum.3: 2.5 is not of the declared type integer`,
			p + `.properties.n.enum.4: "b" is not of the declared type integer`}},
		{"enum against a type union", `{"type":"object","additionalProperties":false,"required":["n"],
			"properties":{"n":{"type":["string","null"],"enum":["a",null,true]}}}`, []string{
			p + `.properties.n.enum.2: true is not of the declared type string or null`}},
		{"const of another type", `{"type":"object","additionalProperties":false,"required":["n"],
			"properties":{"n":{"type":"boolean","const":"yes"}}}`, []string{
			p + `.properties.n.const: "yes" is not of the declared type boolean`}},
		{"required name of a closed object", `{"type":"object","additionalProperties":false,
			"required":["a","zzz"],"properties":{"a":{"type":"string"}}}`, []string{
			p + `.required.1: "zzz" is not a property, and additionalProperties: false forbids ` +
				"any other; no value can match"}},
		{"required name of a nested closed object", `{"type":"object","additionalProperties":false,
			"required":["hq"],"properties":{"hq":{"type":"object","additionalProperties":false,
			"required":["city","zip"],"properties":{"city":{"type":"string"}}}}}`, []string{
			p + `.properties.hq.required.1: "zip" is not a property, and additionalProperties: ` +
				"false forbids any other; no value can match"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := validateTaskSpec(jsonSpec(tc.schema), true)
			wantProblems(t, err, tc.want...)

			// The Task API accepts these specs: the engine only warns.
			warnings, err := ValidateTaskSpec(jsonSpec(tc.schema))
			if err != nil {
				t.Fatalf("ValidateTaskSpec: %v", err)
			}
			if got := warningMessages(warnings); strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("warnings:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestValidateTaskSpec_WarnsOfUnknownAndOpenRequired(t *testing.T) {
	const p = "output_schema.json_schema"
	tests := []struct {
		name   string
		schema string
		want   []string
	}{
		{"typo of a keyword", `{"type":"object","additionalProperties":false,"required":["a"],
			"properties":{"a":{"type":"string","descripton":"x"}}}`, []string{
			p + `.properties.a.descripton: unknown keyword "descripton", ignored ` +
				"(did you mean description?)"}},
		{"unknown keyword at the root", `{"type":"object","additionalProperties":false,
			"required":["a"],"propertys":{},"properties":{"a":{"type":"string"}}}`, []string{
			p + `.propertys: unknown keyword "propertys", ignored (did you mean properties?)`}},
		{"unknown keyword far from any", `{"type":"object","additionalProperties":false,
			"required":["a"],"properties":{"a":{"type":"string","color":"red"}}}`, []string{
			p + `.properties.a.color: unknown keyword "color", ignored`}},
		{"extension and known keywords", `{"type":"object","additionalProperties":false,
			"required":["a"],"$comment":"c","x-ui":{"w":1},
			"properties":{"a":{"type":"string","default":"b","examples":["c"]}}}`, nil},
		{"required name of an open object", `{"type":"object","required":["a","zzz"],
			"properties":{"a":{"type":"string"}}}`, []string{
			p + `.required.1: "zzz" is not a property`,
			p + ": object does not set additionalProperties: false"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, strict := range []bool{false, true} {
				warnings, err := validateTaskSpec(jsonSpec(tc.schema), strict)
				if err != nil {
					t.Fatalf("strict %v: %v", strict, err)
				}
				got := warningMessages(warnings)
				if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
					t.Errorf("strict %v: warnings:\n got %q\nwant %q", strict, got, tc.want)
				}
			}
		})
	}
}
