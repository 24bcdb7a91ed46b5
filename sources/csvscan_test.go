package sources

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// TestCSVScanner_SameResultInAnyChunks scans each input whole, one byte
// per read and through a 4-byte window, so that line endings, runes,
// delimiters and quotes fall across every boundary, and expects the same
// rows or the same error every time.
func TestCSVScanner_SameResultInAnyChunks(t *testing.T) {
	t.Parallel()
	inputs := []struct {
		name, delim, content, want string
	}{
		{"crlf", ",", "id,name\r\n1,\"a\r\nb\"\r\n2,\"c \"\"d\"\"\" \r\n3,Zürich\r\n", "3 rows"},
		{"cr", ",", "id,name\r1,a\r2,b\r", "2 rows"},
		{"multi-byte delimiter", "§", "id§name\n1§a\n2§\"b§c\"\n", "2 rows"},
		{"blank lines", ",", "id,name\n\n1,a\n\n\n2,b", "2 rows"},
		{"ragged", ",", "id,name\r\n1,a\r\n2,b,c\r\n",
			`line 3: expected 2 fields (as in the header), found 3`},
		{"mixed endings", ",", "id,name\r\n1,a\n", `line 2: mixed line endings`},
		{"rune cut", ",", "id,name\n1,\xe2\x82\n", `line 2: field 2: invalid UTF-8 (byte 0xe2)`},
		{"open quote", ",", "id,name\n1,\"a\r\nb\r\n", `line 2: field 2: unterminated quoted field`},
		{"after quote", ",", "id,name\n1,\"ab\"c\n", `line 2: field 2: 'c' after its closing quote`},
		{"quote runs on", ",", "id,name\n1,\"a\nb\"c\n",
			`line 2: field 2: the quoted field that opens on this line runs on to line 3`},
		{"duplicate names", ",", "\xef\xbb\xbfid, \"Id\"\n1,2\n",
			`line 1: duplicate column name "Id"`},
	}
	for _, in := range inputs {
		readers := map[string]func() io.Reader{
			"whole":    func() io.Reader { return strings.NewReader(in.content) },
			"one byte": func() io.Reader { return iotest.OneByteReader(strings.NewReader(in.content)) },
			"half":     func() io.Reader { return iotest.HalfReader(strings.NewReader(in.content)) },
		}
		for rname, r := range readers {
			for _, size := range []int{4, 5, 7, 1 << 10} {
				s := newCSVScanner("in.csv", r(), in.delim, true, size)
				got := ""
				if err := s.scan(context.Background()); err != nil {
					got = err.Error()
				} else {
					got = fmt.Sprintf("%d rows", s.rows)
				}
				if !strings.Contains(got, in.want) {
					t.Errorf("%s, %s reads, %d-byte window: got %q, want %q",
						in.name, rname, size, got, in.want)
				}
			}
		}
	}
}
