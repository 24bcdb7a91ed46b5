package processors

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/taskpipe/taskpipe/api"
)

// An llmTask is what the openai kind asks the model for one output schema:
// the response schema (the task's output wrapped with per-field reasoning
// and confidence), the top-level fields the basis covers and the field
// list the prompt describes.
type llmTask struct {
	// kind is the output's type: json or text.
	kind string
	// original is the task's JSON schema, decoded; nil for text and auto.
	original map[string]any
	// response is the schema sent as response_format.
	response map[string]any
	// fields are the top-level output fields, in prompt order.
	fields []string
	// describe lists the fields for the prompt.
	describe string
	// outputSchema is reported with auto-mode outputs.
	outputSchema json.RawMessage
	// responseChars is the length of the response schema as JSON, for
	// token estimates.
	responseChars int
}

// autoOutputSchema is what the openai kind answers in auto mode.
const autoOutputSchema = `{"type":"object","properties":{` +
	`"summary":{"type":"string","description":"A concise answer to the task for this input."},` +
	`"key_facts":{"type":"array","items":{"type":"string"},` +
	`"description":"The most relevant facts, one per item."}},` +
	`"required":["summary","key_facts"],"additionalProperties":false}`

// newLLMTask builds the task for an output schema. strict makes the schema
// fit OpenAI's strict structured outputs: every property required (optional
// ones made nullable) and no additional properties.
func newLLMTask(schema api.Schema, strict bool) (*llmTask, error) {
	t := &llmTask{kind: api.OutputJSON}
	var doc map[string]any
	switch schema.Type {
	case api.SchemaText:
		t.kind = api.OutputText
		desc := "A report answering the task, in markdown."
		if schema.Description != nil && *schema.Description != "" {
			desc = *schema.Description
		}
		doc = map[string]any{
			"type": "object", "additionalProperties": false, "required": []any{"output"},
			"properties": map[string]any{"output": map[string]any{"type": "string", "description": desc}},
		}
	case api.SchemaJSON:
		if err := json.Unmarshal(schema.JSONSchema, &doc); err != nil {
			return nil, fmt.Errorf("parse output json_schema: %w", err)
		}
		t.original = doc
	default:
		_ = json.Unmarshal([]byte(autoOutputSchema), &doc)
		t.original = doc
		t.outputSchema = json.RawMessage(autoOutputSchema)
	}
	props, ok := doc["properties"].(map[string]any)
	if !ok || len(props) == 0 {
		return nil, fmt.Errorf("output json_schema: root must be an object with properties")
	}
	for k := range props {
		t.fields = append(t.fields, k)
	}
	slices.Sort(t.fields)
	if t.kind == api.OutputJSON {
		t.describe = describeFields(doc)
	} else {
		desc, _ := props["output"].(map[string]any)["description"].(string)
		t.describe = "- output (string, markdown): " + desc
	}

	// The response wraps the output and asks for a basis entry per field.
	output := deepCopy(doc).(map[string]any)
	if strict {
		strictify(output)
	}
	if t.kind == api.OutputText {
		output = map[string]any{"type": "string",
			"description": props["output"].(map[string]any)["description"]}
	}
	basisProps := map[string]any{}
	required := make([]any, 0, len(t.fields))
	for _, f := range t.fields {
		basisProps[f] = map[string]any{
			"type": "object", "additionalProperties": false,
			"required": []any{"reasoning", "confidence"},
			"properties": map[string]any{
				"reasoning": map[string]any{"type": "string",
					"description": "How this value was determined, in one or two sentences."},
				"confidence": map[string]any{"type": "string", "enum": []any{"low", "medium", "high"}},
			},
		}
		required = append(required, f)
	}
	if t.kind == api.OutputText {
		basisProps = map[string]any{"output": basisProps["output"]}
	}
	t.response = map[string]any{
		"type": "object", "additionalProperties": false,
		"required": []any{"output", "basis"},
		"properties": map[string]any{
			"output": output,
			"basis": map[string]any{"type": "object", "additionalProperties": false,
				"required": required, "properties": basisProps},
		},
	}
	if defs, ok := output["$defs"]; ok {
		// Local references point at the root, so the definitions move there.
		delete(output, "$defs")
		t.response["$defs"] = defs
	}
	t.responseChars = len(mustJSON(t.response))
	return t, nil
}

// describeFields lists the top-level fields of a schema with their types,
// allowed values and descriptions, for the prompt.
func describeFields(doc map[string]any) string {
	props, _ := doc["properties"].(map[string]any)
	names := make([]string, 0, len(props))
	for k := range props {
		names = append(names, k)
	}
	slices.Sort(names)
	var b strings.Builder
	for _, k := range names {
		p, _ := props[k].(map[string]any)
		typ := "any"
		switch v := p["type"].(type) {
		case string:
			typ = v
		case []any:
			typ = fmt.Sprint(v...)
		}
		fmt.Fprintf(&b, "- %s (%s)", k, typ)
		if e, ok := p["enum"].([]any); ok {
			fmt.Fprintf(&b, ", one of %s", mustJSON(e))
		}
		if d, ok := p["description"].(string); ok && d != "" {
			fmt.Fprintf(&b, ": %s", d)
		}
		b.WriteByte('\n')
	}
	return strings.TrimRight(b.String(), "\n")
}

// strictify rewrites a schema in place for strict structured outputs.
func strictify(s map[string]any) {
	if props, ok := s["properties"].(map[string]any); ok {
		required := map[string]bool{}
		if req, ok := s["required"].([]any); ok {
			for _, r := range req {
				if rs, ok := r.(string); ok {
					required[rs] = true
				}
			}
		}
		all := make([]any, 0, len(props))
		names := make([]string, 0, len(props))
		for k := range props {
			names = append(names, k)
		}
		slices.Sort(names)
		for _, k := range names {
			p, ok := props[k].(map[string]any)
			if !ok {
				continue
			}
			strictify(p)
			if !required[k] {
				props[k] = nullable(p)
			}
			all = append(all, k)
		}
		s["required"] = all
		s["additionalProperties"] = false
	}
	if items, ok := s["items"].(map[string]any); ok {
		strictify(items)
	}
	for _, key := range []string{"anyOf", "oneOf", "allOf"} {
		if alts, ok := s[key].([]any); ok {
			for _, a := range alts {
				if am, ok := a.(map[string]any); ok {
					strictify(am)
				}
			}
		}
	}
	for _, key := range []string{"$defs", "definitions"} {
		if defs, ok := s[key].(map[string]any); ok {
			for _, d := range defs {
				if dm, ok := d.(map[string]any); ok {
					strictify(dm)
				}
			}
		}
	}
}

// nullable returns a schema that also accepts null.
func nullable(p map[string]any) map[string]any {
	if e, ok := p["enum"].([]any); ok && !slices.Contains(e, any(nil)) {
		p["enum"] = append(e, nil)
	}
	switch t := p["type"].(type) {
	case string:
		if t != "null" {
			p["type"] = []any{t, "null"}
		}
		return p
	case []any:
		if !slices.Contains(t, any("null")) {
			p["type"] = append(t, "null")
		}
		return p
	}
	return map[string]any{"anyOf": []any{p, map[string]any{"type": "null"}}}
}

// dropOptionalNulls removes, in place, the null values that strict mode
// put in place of properties the original schema did not require.
func dropOptionalNulls(v any, schema map[string]any) {
	switch val := v.(type) {
	case map[string]any:
		props, _ := schema["properties"].(map[string]any)
		required := map[string]bool{}
		if req, ok := schema["required"].([]any); ok {
			for _, r := range req {
				if rs, ok := r.(string); ok {
					required[rs] = true
				}
			}
		}
		for k, x := range val {
			if x == nil && !required[k] {
				delete(val, k)
				continue
			}
			if ps, ok := props[k].(map[string]any); ok {
				dropOptionalNulls(x, ps)
			}
		}
	case []any:
		items, _ := schema["items"].(map[string]any)
		for _, x := range val {
			dropOptionalNulls(x, items)
		}
	}
}

// deepCopy copies a decoded JSON value.
func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = deepCopy(e)
		}
		return m
	case []any:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = deepCopy(e)
		}
		return s
	}
	return v
}

// llmPrompt is the system and user messages for one run.
func llmPrompt(t *llmTask, input json.RawMessage, policy *api.SourcePolicy) (system, user string) {
	var b strings.Builder
	b.WriteString("You are a careful research assistant. Complete the task for the input " +
		"below from what you know. Fill every output field. For each top-level field, give " +
		"brief reasoning and a confidence of low, medium or high; choose low when you are " +
		"unsure or the answer may be out of date. Never invent sources, numbers or names: " +
		"when a value is unknown say so in the reasoning and use null where the schema " +
		"allows it.")
	if policy != nil {
		if len(policy.IncludeDomains) > 0 {
			fmt.Fprintf(&b, " Rely only on information from these domains: %s.",
				strings.Join(policy.IncludeDomains, ", "))
		} else if len(policy.ExcludeDomains) > 0 {
			fmt.Fprintf(&b, " Do not rely on information from these domains: %s.",
				strings.Join(policy.ExcludeDomains, ", "))
		}
		if policy.AfterDate != nil && *policy.AfterDate != "" {
			fmt.Fprintf(&b, " Prefer information published after %s.", *policy.AfterDate)
		}
	}
	system = b.String()

	// The input is shown as text when it is a JSON string, else as JSON.
	var text string
	shown := string(input)
	if json.Unmarshal(input, &text) == nil {
		shown = text
	}
	user = "Input:\n" + shown + "\n\nOutput fields:\n" + t.describe +
		"\n\nAnswer with the output and a basis entry (reasoning, confidence) for each field."
	return system, user
}
