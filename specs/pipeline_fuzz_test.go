package specs

import (
	"strings"
	"testing"
)

// FuzzParsePipeline feeds arbitrary YAML to the pipeline decoder and
// validator; they must never panic, and an accepted spec must be complete.
func FuzzParsePipeline(f *testing.F) {
	f.Add([]byte(goodPipeline))
	f.Add([]byte("version: 1\nmapping: {a: {value: [1, {b: c}]}}\n"))
	f.Add([]byte("version: 1\nmapping: {a: 1}\ntask: {output_schema: \"x\"}\n"))
	f.Add([]byte("source: {csv: {paths: [a], delimiter: ';;'}}\nkey: [1]\n"))
	f.Add([]byte("task: {input_schema: [1], output_schema: {type: json, json_schema: {a: *x}}}\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte(strings.Replace(goodPipeline, "lite", "{x: 1}", 1)))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePipeline(data, dir)
		if err != nil {
			return
		}
		if p.Version != PipelineVersion || len(p.Key) == 0 || p.Task.Processor == "" ||
			p.TaskSpec.OutputSchema.Type == "" {
			t.Fatalf("accepted an incomplete spec: %+v", p)
		}
	})
}
