package specs

import (
	"encoding/json"
	"errors"
	"math/big"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	gojson "github.com/goccy/go-json"
)

// fastCase is a schema the fast checker handles, values it must accept as
// the full validator does, and values the full validator rejects.
type fastCase struct {
	name    string
	schema  string
	valid   []string
	invalid []string
}

// companiesSchema is the input schema of examples/companies.
const companiesSchema = `{"type":"object","properties":{
 "company_name":{"type":"string","description":"The company's name"},
 "ticker":{"type":"string"},
 "sector":{"type":["string","null"]},
 "headquarters":{"type":["string","null"],"title":"HQ"}},
 "required":["company_name","ticker","sector","headquarters"],
 "additionalProperties":false}`

// nestedSchema nests objects, arrays of arrays and a unicode enum.
const nestedSchema = `{"type":"object","$comment":"nested","properties":{
 "hq":{"type":"object","properties":{"city":{"type":"string"},"zip":{"type":["integer","null"]}},
       "required":["city"],"additionalProperties":false},
 "grid":{"type":"array","items":{"type":"array","items":{"type":"integer"}}},
 "lang":{"type":"string","enum":["日本語","français","","a\"b"]},
 "any":{"description":"anything at all","default":1,"examples":[1,"x"]}},
 "required":["hq"]}`

// fastCases are the schemas of the differential test, each with values it
// must accept and values it must reject.
var fastCases = []fastCase{
	{name: "pipeline", schema: pipelineSchema,
		valid: []string{
			pipelineInput,
			" \n\t" + pipelineInput + "\r\n ",
			`{"company_name":"","ticker":null,"employees":0,"listed":false,"tier":"mega","tags":[]}`,
			`{"company_name":"Ünïcødé 日本","ticker":"X","employees":-7,"listed":true,"tier":"small",` +
				`"tags":["a","é","\u00e9"]}`,
			`{"company_name":"A","ticker":"B","employees":12000.0,"listed":true,"tier":"mid","tags":["x"]}`,
			`{"company_name":"A","ticker":"B","employees":1.2e4,"listed":true,"tier":"mid","tags":[]}`,
			`{"company_name":"A","ticker":"B","employees":150E-1,"listed":true,"tier":"mid","tags":[]}`,
			`{"company_name":"A","ticker":"B","employees":-0.0,"listed":true,"tier":"mid","tags":[]}`,
			`{ "tags" : [ "a" , "b" ] , "tier" : "large" , "listed" : true , "employees" : 1 ,` +
				` "ticker" : "T" , "company_name" : "C" }`,
		},
		invalid: []string{
			`{"company_name":"A","ticker":"B","employees":1.5,"listed":true,"tier":"mid","tags":[]}`,
			`{"company_name":"A","ticker":"B","employees":"12","listed":true,"tier":"mid","tags":[]}`,
			`{"company_name":"A","ticker":"B","employees":1,"listed":"yes","tier":"mid","tags":[]}`,
			`{"company_name":"A","ticker":"B","employees":1,"listed":true,"tier":"MID","tags":[]}`,
			`{"company_name":"A","ticker":"B","employees":1,"listed":true,"tier":null,"tags":[]}`,
			`{"company_name":"A","ticker":"B","employees":1,"listed":true,"tier":"mid","tags":[1]}`,
			`{"company_name":"A","ticker":"B","employees":1,"listed":true,"tier":"mid","tags":null}`,
			`{"company_name":"A","ticker":"B","employees":1,"listed":true,"tier":"mid","tags":[["a"]]}`,
			`{"company_name":"A","ticker":"B","employees":1,"listed":true,"tier":"mid"}`,
			`{"company_name":"A","ticker":"B","employees":1,"listed":true,"tier":"mid","tags":[],"x":1}`,
			`{"company_name":null,"ticker":"B","employees":1,"listed":true,"tier":"mid","tags":[]}`,
			`{"company_name":"A","ticker":"B","employees":1e-1,"listed":true,"tier":"mid","tags":[]}`,
			`{}`, `[]`, `null`, `"x"`, `12`,
			`{"company_name":"A","ticker":"B","employees":1,"listed":true,"tier":"mid","tags":[],}`,
			`{"company_name":"A","ticker":"B","employees":01,"listed":true,"tier":"mid","tags":[]}`,
			pipelineInput + `x`, pipelineInput + pipelineInput, ``, ` `,
		}},
	{name: "companies", schema: companiesSchema,
		valid: []string{
			`{"company_name":"Acme","ticker":"ACME","sector":null,"headquarters":"Oslo"}`,
			`{"company_name":"Acme","ticker":"ACME","sector":"Energy","headquarters":null}`,
			// A repeated key: decoders keep the last copy.
			`{"company_name":"Acme","ticker":"ACME","sector":"E","headquarters":null,"sector":null}`,
		},
		invalid: []string{
			`{"company_name":"Acme","ticker":null,"sector":null,"headquarters":"Oslo"}`,
			`{"company_name":"Acme","ticker":"ACME","sector":null}`,
			`{"company_name":"Acme","ticker":"ACME","sector":null,"headquarters":"Oslo","ceo":"X"}`,
			`{"company_name":"Acme","ticker":"ACME","sector":null,"headquarters":null,"sector":1}`,
		}},
	{name: "nested", schema: nestedSchema,
		valid: []string{
			`{"hq":{"city":"Oslo"}}`,
			`{"hq":{"city":"Oslo","zip":null},"grid":[[1,2],[],[3.0]],"lang":"日本語"}`,
			`{"hq":{"city":"Oslo","zip":1234},"lang":"","any":[{"x":[1,{"y":null}]}],"extra":{"a":[]}}`,
			`{"hq":{"city":"Oslo"},"lang":"français","any":"x"}`,
		},
		invalid: []string{
			`{"hq":{"city":"Oslo","zip":"1234"}}`,
			`{"hq":{"city":"Oslo","country":"NO"}}`,
			`{"hq":{}}`, `{"hq":null}`, `{"grid":[[1]]}`,
			`{"hq":{"city":"Oslo"},"grid":[[1.5]]}`,
			`{"hq":{"city":"Oslo"},"grid":[1]}`,
			`{"hq":{"city":"Oslo"},"lang":"francais"}`,
			`{"hq":{"city":"Oslo"},"lang":"日本"}`,
			`{"hq":{"city":"Oslo"},"lang":1}`,
		}},
	{name: "root array", schema: `{"type":"array","items":{"type":"integer"}}`,
		valid:   []string{`[]`, `[1,2,3]`, `[-1,0,1e3,2.0]`, `[9007199254740991]`},
		invalid: []string{`[1.5]`, `["1"]`, `[null]`, `{}`, `[[1]]`, `[1,]`, `[1 2]`}},
	{name: "no type", schema: `{"properties":{"a":{"type":"string"}},"required":["a"]}`,
		valid:   []string{`{"a":"x"}`, `1`, `"a"`, `null`, `[1,{"a":1}]`, `{"a":"x","b":1}`},
		invalid: []string{`{}`, `{"a":1}`, `{"b":"x"}`}},
	{name: "nullable object", schema: `{"type":["object","null"],"properties":{"n":{"type":"number"}},` +
		`"additionalProperties":true}`,
		valid:   []string{`null`, `{}`, `{"n":1.5}`, `{"n":-1e300,"m":"x"}`, `{"n":1e400}`},
		invalid: []string{`{"n":"1"}`, `[]`, `1`, `{"n":null}`}},
	{name: "enum only", schema: `{"enum":["a","b"]}`,
		valid:   []string{`"a"`, `"b"`},
		invalid: []string{`"c"`, `null`, `1`, `["a"]`, `{"a":"a"}`}},
	{name: "closed empty", schema: `{"type":"object","additionalProperties":false}`,
		valid:   []string{`{}`, ` { } `},
		invalid: []string{`{"a":1}`, `null`}},
	{name: "anything", schema: `{"description":"any JSON value"}`,
		valid: []string{`null`, `true`, `1`, `"x"`, `[]`, `{"a":[1,{"b":false}]}`},
		invalid: []string{
			// Only not-JSON is rejected.
			`{"a":}`, `[1,,2]`, `tru`, `nul`, `-`, `1.`, `.5`, `+1`, `"\q"`, `"\u12"`, "\"a\x01\"",
		}},
	{name: "many properties", schema: manyProperties(64),
		valid: []string{manyPropertiesValue(64)},
		invalid: []string{
			manyPropertiesValue(63),
			strings.Replace(manyPropertiesValue(64), `"p63":"v"`, `"p63":1`, 1),
		}},
}

// manyPropertiesValue is an object of properties p0 … p(n-1), all "v".
func manyPropertiesValue(n int) string {
	parts := make([]string, n)
	for i := range n {
		parts[i] = `"p` + strconv.Itoa(i) + `":"v"`
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// numberProbes are number literals that the differential test also places
// where integers and numbers are expected.
var numberProbes = []string{
	`0`, `-0`, `1`, `1.0`, `1.5`, `-1e2`, `1E+2`, `1e-2`, `100e-2`, `0.0e-5`, `1e400`, `-1e400`,
	`1e-400`, `123456789012345678901234567890`, `9007199254740993`, `9007199254740992.0`,
	`1e1000000000`, `1.5e1000000000`, `1e1000001`, `1e-1000001`, `0e1000001`, `1e9999`,
	`1e10000`, `1.` + strings.Repeat("0", 1000), `1.` + strings.Repeat("0", 1001),
	`1` + strings.Repeat("0", 2000) + `e-1001`, `01`, `1.`, `-`, `1e+`, `1.0e1.0`,
}

// numberSlots are documents with a hole for a number literal.
var numberSlots = []struct{ schema, doc string }{
	{pipelineSchema, `{"company_name":"A","ticker":"B","employees":%s,"listed":true,` +
		`"tier":"mid","tags":[]}`},
	{`{"type":"array","items":{"type":"integer"}}`, `[%s]`},
	{`{"type":"array","items":{"type":["number","null"]}}`, `[%s]`},
	{`{"type":"integer"}`, `%s`},
}

// probeValues are checked against every schema: the fast checker may say
// anything about them, but never "valid" where the full validator does not.
var probeValues = []string{
	`null`, `true`, `false`, `0`, `-0`, `1`, `1.0`, `1.5`, `-1e2`, `1E+2`, `1e-2`, `100e-2`,
	`0.0e-5`, `1e400`, `-1e400`, `1e-400`, `123456789012345678901234567890`,
	`9007199254740993`, `9007199254740992.0`, `1e1000000000`, `1.5e1000000000`,
	`1e1000001`, `1e-1000001`, `0e1000001`, `1.` + strings.Repeat("0", 1000001),
	`"x"`, `""`, `"a"`, `"日本語"`, `"\u65e5\u672c\u8a9e"`, `"a\"b"`, `"a\\"b"`,
	"\"\xff\"", "\"fran\xe7ais\"", `[]`, `[[]]`, `[1,"a",null]`, `{}`, `{"a":1}`,
	`{"a":"x","a":1}`, `{"a":1,"a":"x"}`, `{"\u0061":"x"}`, "{\"\xff\":1}",
	`{"hq":{"city":"Oslo","city":1}}`, `{"hq":{"city":1,"city":"Oslo"}}`,
	`{"n":1,"n":"x"}`, `{"n":"x","n":1}`,
	`{"company_name":"Acme","ticker":"ACME","sector":1,"headquarters":null,"sector":null}`,
	"\ufeff{}", `{} `, `{}}`, `{"a":1}{"a":1}`, `[1]]`, `"x"y`, `{"a" 1}`, `{"a":1,}`,
	`{,}`, `{"a"}`, `[`, `{`, `"`, `"\`, `"\u00`, `-01`, `01`, `1.e1`, `1e+`, `--1`, `1-`,
	strings.Repeat("[", 40) + strings.Repeat("]", 40),
	strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
	`{"any":` + strings.Repeat(`{"a":`, 40) + `1` + strings.Repeat("}", 40) + `,"hq":{"city":"x"}}`,
}

// decoders turn JSON into values as taskpipe's callers do: decodeJSON keeps
// json.Number, encoding/json and go-json (the engine) give float64.
var decoders = []struct {
	name   string
	decode func([]byte) (any, error)
}{
	{"decodeJSON", decodeJSON},
	{"encoding/json", func(b []byte) (v any, err error) { err = json.Unmarshal(b, &v); return v, err }},
	{"go-json", func(b []byte) (v any, err error) { err = gojson.Unmarshal(b, &v); return v, err }},
}

// checkFastPath checks raw, and its decoded forms, with s and with the full
// validator alone. It fails t when the fast checker accepts what the full
// validator rejects, or when the errors of s and the full validator differ,
// and reports whether the fast checker accepted raw in every form.
func checkFastPath(t testing.TB, s *Schema, raw []byte) (fastValid bool) {
	t.Helper()
	full := &Schema{compiled: s.compiled}

	// The raw document, as ValidateJSON sees it.
	fastValid = s.fast.validJSON(raw)
	fullErr := full.ValidateJSON(raw)
	if fastValid && fullErr != nil {
		t.Errorf("fast checker accepted %q, full validator: %v", raw, fullErr)
	}
	if got := s.ValidateJSON(raw); !sameError(got, fullErr) {
		t.Errorf("ValidateJSON(%q) = %v, full validator alone: %v", raw, got, fullErr)
	}

	// Each decoded form, as ValidateValue sees it.
	for _, d := range decoders {
		v, err := d.decode(raw)
		if err != nil {
			continue
		}
		fastOK := s.fast.validValue(v)
		fullErr := full.ValidateValue(v)
		if fastOK && fullErr != nil {
			t.Errorf("fast checker accepted %q from %s, full validator: %v", raw, d.name, fullErr)
		}
		if got := s.ValidateValue(v); !sameError(got, fullErr) {
			t.Errorf("ValidateValue(%q from %s) = %v, full validator alone: %v", raw, d.name, got, fullErr)
		}
		fastValid = fastValid && fastOK
	}
	return fastValid
}

// sameError reports whether two validation results are the same. The full
// validator words the same problems in an order that follows Go's map order,
// so violations are compared as sorted multisets of their bytes.
func sameError(a, b error) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	var va, vb *ValueError
	if !errors.As(a, &va) || !errors.As(b, &vb) {
		return a.Error() == b.Error()
	}
	canon := func(vs []string) []string {
		out := make([]string, len(vs))
		for i, v := range vs {
			bs := []byte(v)
			slices.Sort(bs)
			out[i] = string(bs)
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(canon(va.Violations), canon(vb.Violations))
}

func TestSchemaFastPath_Differential(t *testing.T) {
	for _, tc := range fastCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := CompileSchema(json.RawMessage(tc.schema))
			if err != nil {
				t.Fatalf("CompileSchema: %v", err)
			}
			if s.fast == nil {
				t.Fatalf("no fast checker for %s", tc.schema)
			}
			for _, v := range tc.valid {
				if !checkFastPath(t, s, []byte(v)) {
					t.Errorf("fast checker did not accept %q in every form", v)
				}
				if err := s.ValidateJSON(json.RawMessage(v)); err != nil {
					t.Errorf("ValidateJSON(%q): %v", v, err)
				}
			}
			for _, v := range tc.invalid {
				checkFastPath(t, s, []byte(v))
				if err := s.ValidateJSON(json.RawMessage(v)); err == nil {
					t.Errorf("ValidateJSON(%q) passed, want an error", v)
				}
			}
			for _, v := range probeValues {
				checkFastPath(t, s, []byte(v))
			}
		})
	}
}

func TestSchemaFastPath_Numbers(t *testing.T) {
	for _, slot := range numberSlots {
		s, err := CompileSchema(json.RawMessage(slot.schema))
		if err != nil || s.fast == nil {
			t.Fatalf("CompileSchema(%s): %v, fast checker %v", slot.schema, err, s.fast != nil)
		}
		for _, n := range numberProbes {
			checkFastPath(t, s, []byte(strings.Replace(slot.doc, "%s", n, 1)))
		}
		if !checkFastPath(t, s, []byte(strings.Replace(slot.doc, "%s", "12.0e3", 1))) {
			t.Errorf("fast checker rejected 12.0e3 in %s", slot.doc)
		}
	}
}

func TestSchemaFastPath_ErrorsUnchanged(t *testing.T) {
	s, err := CompileSchema(json.RawMessage(pipelineSchema))
	if err != nil {
		t.Fatalf("CompileSchema: %v", err)
	}
	err = s.ValidateJSON(json.RawMessage(`{"company_name":"A","ticker":"B","employees":1.5,` +
		`"listed":true,"tier":"MID","tags":["a",7]}`))
	var ve *ValueError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v, want *ValueError", err)
	}
	slices.Sort(ve.Violations)
	want := []string{
		"employees: got number, want integer",
		`tags.1: got number, want string`,
		`tier: value must be one of 'mega', 'large', 'mid', 'small'`,
	}
	if !slices.Equal(ve.Violations, want) {
		t.Errorf("violations = %q, want %q", ve.Violations, want)
	}
	err = s.ValidateJSON(json.RawMessage(`{"a":`))
	if err == nil || err.Error() != "not valid JSON: unexpected EOF" {
		t.Errorf("ValidateJSON(truncated) = %v, want not valid JSON: unexpected EOF", err)
	}
}

func TestCompileSchema_FastCheckerOnlyForSimpleSchemas(t *testing.T) {
	for _, schema := range []string{
		`{"type":"string","format":"email"}`,
		`{"type":"string","pattern":"^a"}`,
		`{"type":"string","minLength":1}`,
		`{"type":"integer","minimum":0}`,
		`{"type":"array","items":{"type":"string"},"minItems":1}`,
		`{"type":"array","items":{"type":"string"},"uniqueItems":true}`,
		`{"type":"array","prefixItems":[{"type":"string"}]}`,
		`{"type":"array","items":true}`,
		`{"type":"object","properties":{"a":{"$ref":"#/$defs/x"}},"$defs":{"x":{"type":"string"}}}`,
		`{"type":"object","properties":{"a":{"anyOf":[{"type":"string"},{"type":"null"}]}}}`,
		`{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object"}`,
		`{"$schema":"http://json-schema.org/draft-04/schema#","type":"object"}`,
		`{"$id":"https://example.com/x","type":"object"}`,
		`{"type":"object","additionalProperties":{"type":"string"}}`,
		`{"type":"object","patternProperties":{"^a":{"type":"string"}}}`,
		`{"type":"object","unevaluatedProperties":false}`,
		`{"type":"object","properties":{"a":{"type":"string"}},"required":["b"]}`,
		`{"type":"object","properties":{"a":true}}`,
		`{"type":"object","properties":{"a":{"type":"string","nullable":true}}}`,
		`{"enum":["a",1]}`,
		`{"enum":["a",null]}`,
		`{"const":"a"}`,
		`{"type":"object","dependentRequired":{"a":["b"]}}`,
		`{"not":{"type":"null"}}`,
		`{"if":{"type":"string"},"then":{"minLength":1}}`,
		`{"type":"string","contentEncoding":"base64"}`,
		manyProperties(65),
		nested(fastMaxDepth), // its leaf is fastMaxDepth+1 levels deep
		goodSchema,
	} {
		s, err := CompileSchema(json.RawMessage(schema))
		if err != nil {
			t.Errorf("CompileSchema(%s): %v", schema, err)
			continue
		}
		if s.fast != nil {
			t.Errorf("CompileSchema(%s) built a fast checker", schema)
		}
	}
	for _, schema := range []string{pipelineSchema, companiesSchema, nestedSchema, nested(fastMaxDepth - 1)} {
		s, err := CompileSchema(json.RawMessage(schema))
		if err != nil {
			t.Fatalf("CompileSchema(%s): %v", schema, err)
		}
		if s.fast == nil {
			t.Errorf("CompileSchema(%s) built no fast checker", schema)
		}
	}
}

func TestNumberLiteral(t *testing.T) {
	for _, tc := range []struct {
		lit               string
		number, isInteger bool
	}{
		{"3", true, true}, {"-0", true, true}, {"3.0", true, true}, {"1e2", true, true},
		{"1E+2", true, true}, {"150e-1", true, true}, {"100e-2", true, true},
		{"12.340e2", true, true}, {"0.0e-5", true, true}, {"-0.000", true, true},
		{"1.5", true, false}, {"1e-1", true, false}, {"12.345e2", true, false},
		{"1010e-1", true, true}, {"1010e-2", true, false}, {"0.5e1", true, true},
		// big.Rat, and so the full validator, gives up on huge exponents.
		{"1e1000001", true, false}, {"1e99999", true, false}, {"1e9999", true, true},
		{"0e99999999999999999999", true, false}, {"1e1000000000", true, false},
		{"1." + strings.Repeat("0", 1000), true, true},
		{"1." + strings.Repeat("0", 1001), true, false},
		{"1" + strings.Repeat("0", 2000) + "e-1001", true, true},
		{"01", false, false}, {"1.", false, false}, {".5", false, false}, {"+1", false, false},
		{"1e", false, false}, {"1e+", false, false}, {"-", false, false}, {"", false, false},
		{"1 ", false, false}, {"0x10", false, false}, {"1/2", false, false}, {"Inf", false, false},
	} {
		number, isInteger := numberLiteral(tc.lit)
		if number != tc.number || isInteger != tc.isInteger {
			t.Errorf("numberLiteral(%q) = %v, %v, want %v, %v", tc.lit, number, isInteger,
				tc.number, tc.isInteger)
		}
		// The full validator's own test: the literal read as a big.Rat.
		if rat, ok := new(big.Rat).SetString(tc.lit); isInteger && !(ok && rat.IsInt()) {
			t.Errorf("numberLiteral(%q) says integer, big.Rat does not", tc.lit)
		}
	}
}

// hugeExponent matches number exponents of five digits or more.
var hugeExponent = regexp.MustCompile(`[eE][-+]?[0-9]{5}`)

// FuzzSchemaFastPath compiles arbitrary schemas and checks arbitrary
// documents with them: wherever a schema gets a fast checker, it must never
// accept what the full validator rejects, nor change any error.
func FuzzSchemaFastPath(f *testing.F) {
	for _, tc := range fastCases {
		for _, v := range append(append(tc.valid, tc.invalid...), probeValues[:20]...) {
			f.Add(tc.schema, []byte(v))
		}
	}
	f.Fuzz(func(t *testing.T, schema string, value []byte) {
		// The full validator takes seconds over numbers with exponents of
		// a million; the fast checker leaves those to it (TestNumberLiteral).
		if hugeExponent.Match(value) {
			return
		}
		s, err := CompileSchema(json.RawMessage(schema))
		if err != nil || s.fast == nil {
			return
		}
		checkFastPath(t, s, value)
	})
}
