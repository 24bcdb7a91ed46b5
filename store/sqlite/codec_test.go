package sqlite

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestPackOutput(t *testing.T) {
	reasoning := strings.Repeat("the same reasoning for every field of the output ", 3)
	var b strings.Builder
	b.WriteString(`{"type":"json","content":{"a":1},"basis":[`)
	for i := range 8 {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`{"field":"f` + string(rune('a'+i)) + `","reasoning":"` + reasoning + `"}`)
	}
	b.WriteString("]}")
	big := json.RawMessage(b.String())

	cases := []struct {
		name       string
		raw        json.RawMessage
		compressed bool
	}{
		{"repetitive output", big, true},
		{"short output", json.RawMessage(`{"type":"text","content":"yes"}`), false},
		{"incompressible output", incompressible(600), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			stored := packOutput(c.raw).([]byte)
			if got := len(stored) > 0 && stored[0] == compressedOutput; got != c.compressed {
				t.Fatalf("compressed = %v, want %v (%d bytes stored for %d)", got, c.compressed,
					len(stored), len(c.raw))
			}
			if c.compressed && len(stored) >= len(c.raw)/2 {
				t.Errorf("%d bytes stored for %d", len(stored), len(c.raw))
			}
			if back := unpackOutput(stored); !bytes.Equal(back, c.raw) {
				t.Errorf("round trip changed the output:\n%s\n%s", back, c.raw)
			}
		})
	}

	// Blobs written before compression, and damaged ones, read as stored.
	plain := []byte(`{"type":"json","content":{}}`)
	if got := unpackOutput(plain); !bytes.Equal(got, plain) {
		t.Errorf("plain blob read as %s", got)
	}
	damaged := []byte{compressedOutput, 0xff, 0xff, 0xff}
	if got := unpackOutput(damaged); !bytes.Equal(got, damaged) {
		t.Errorf("damaged blob read as %q", got)
	}
	if packOutput(nil) != nil {
		t.Error("an empty output is not stored as NULL")
	}
}

// incompressible returns a JSON string of n pseudo-random letters.
func incompressible(n int) json.RawMessage {
	b := make([]byte, 0, n+2)
	b = append(b, '"')
	x := uint32(2463534242)
	for len(b) < n+1 {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b = append(b, 'a'+byte(x%26), 'A'+byte((x>>8)%26), '0'+byte((x>>16)%10))
	}
	return append(b[:n+1], '"')
}
