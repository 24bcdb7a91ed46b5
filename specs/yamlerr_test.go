package specs

import (
	"strings"
	"testing"
)

func TestParsePipeline_DecodeErrorsNameTheirKeys(t *testing.T) {
	spec := `version: "one"
name: x
sourc:
  parquet: [a.parquet]
key: [id]
task:
  processor: synthetic
  output_schema: {type: text}
  extra: 1
`
	_, err := ParsePipeline([]byte(spec), t.TempDir())
	if err == nil {
		t.Fatal("bad spec accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		"version: cannot unmarshal !!str `one` into int (line 1)",
		"sourc: unknown key (line 3)",
		"task.extra: unknown key (line 9)",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not contain %q:\n%s", want, msg)
		}
	}
}
