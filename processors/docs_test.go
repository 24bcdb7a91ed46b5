package processors

import (
	"os"
	"strings"
	"testing"

	"github.com/taskpipe/taskpipe/engine"
)

// TestDocs_ExamplesParse checks that every processor file shown in
// docs/processors.md is valid.
func TestDocs_ExamplesParse(t *testing.T) {
	t.Setenv("ENRICH_TOKEN", "example-token")
	t.Setenv("OPENAI_API_KEY", "example-key")
	doc, err := os.ReadFile("../docs/processors.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := strings.Split(string(doc), "```yaml\n")[1:]
	if len(blocks) < 5 {
		t.Fatalf("%d yaml examples, want one per kind and the overview", len(blocks))
	}
	kinds := map[string]bool{}
	for i, b := range blocks {
		file := b[:strings.Index(b, "```")]
		backends, err := Parse([]byte(file), nil)
		if err != nil {
			t.Errorf("example %d: %v\n%s", i+1, err, file)
			continue
		}
		for _, be := range backends {
			kinds[typeName(be.Processor)] = true
			if c, ok := be.Processor.(engine.Closer); ok {
				_ = c.Close()
			}
		}
	}
	for _, k := range []string{"synthetic", "http", "exec", "openai"} {
		if !kinds[k] {
			t.Errorf("no example builds a %s processor (built %v)", k, kinds)
		}
	}
}

// typeName names a processor's type.
func typeName(p engine.Processor) string {
	switch p.(type) {
	case *Synthetic:
		return "synthetic"
	case *HTTP:
		return "http"
	case *Exec:
		return "exec"
	case *OpenAI:
		return "openai"
	}
	return "unknown"
}
