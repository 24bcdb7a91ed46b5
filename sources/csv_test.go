package sources_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/taskpipe/taskpipe/pipeline"
	"github.com/taskpipe/taskpipe/sources"
)

// writeCSV writes content to name in a fresh temporary folder.
func writeCSV(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// numbered returns a header and n rows "i,i" of columns id and n, with
// the row of id bad holding text in n.
func numbered(n, bad int, text string) string {
	var b strings.Builder
	b.WriteString("id,n\n")
	for i := 0; i < n; i++ {
		if i == bad {
			fmt.Fprintf(&b, "%d,%s\n", i, text)
		} else {
			fmt.Fprintf(&b, "%d,%d\n", i, i)
		}
	}
	return b.String()
}

// readCSV opens a CSV source over paths and reads it to the end, the way
// the pipeline does: Columns, then Read. It returns the rows and the first
// error, and counts the batches handed on.
func readCSV(t *testing.T, opts sources.CSVOptions) (rows [][]any, batches int, err error) {
	t.Helper()
	src, err := sources.NewCSV(opts)
	if err != nil {
		return nil, 0, err
	}
	defer src.Close()
	if _, err := src.Columns(context.Background()); err != nil {
		return nil, 0, err
	}
	err = src.Read(context.Background(), 1000, func(b pipeline.Batch) error {
		batches++
		rows = append(rows, b.Rows...)
		return nil
	})
	return rows, batches, err
}

func TestCSV_MalformedFilesNameFileLineAndReason(t *testing.T) {
	t.Parallel()
	longRow := "id,name\n1,a\n2," + strings.Repeat("x", 2_000_001) + "\n3,c\n"
	cases := []struct {
		name    string
		content string
		line    int64
		reason  string
	}{
		{"too many fields", "id,name,n\n1,a,2\n2,b,3,4\n3,c,5\n", 3,
			"expected 3 fields (as in the header), found 4"},
		{"too few fields", "id,name,n\n1,a,2\n2,b\n3,c,5\n", 3,
			"expected 3 fields (as in the header), found 2"},
		{"ragged row after the sniffer's sample", numbered(30000, -1, "") + "30000,1,extra\n",
			30002, "expected 2 fields (as in the header), found 3"},
		{"unterminated quote", "id,name\n1,a\n2,\"never closed\n3,c\n4,d\n", 3,
			"field 2: unterminated quoted field"},
		{"closing quote missing", "id,name,city\n1,\"Acme,Paris\n2,\"Beta\",Rome\n", 2,
			"field 2: the quoted field that opens on this line runs on to line 3, where 'B' follows"},
		{"text after a closing quote", "id,name\n1,\"Acme\" Inc\n", 2,
			`field 2: 'I' after its closing quote`},
		{"invalid UTF-8", "id,name\n1,ok\n2,Z\xfcrich\n", 3, "field 2: invalid UTF-8 (byte 0xfc)"},
		{"empty file", "", 1, "empty file: expected a header line"},
		{"byte order mark only", "\xef\xbb\xbf", 1, "empty file"},
		{"blank header line", "\nid,name\n1,a\n", 1, "empty header line"},
		{"duplicate header names", "id,name,Name\n1,a,b\n", 1,
			`duplicate column name "Name" (fields 2 and 3)`},
		{"mixed line endings", "id,name\r\n1,a\r\n2,b\n3,c\r\n", 3,
			`mixed line endings: this line ends in \n, line 1 in \r\n`},
		{"carriage return inside an unquoted field", "id,name\n1,a\rb\n", 2, "mixed line endings"},
		{"title line above the header", "Companies of 2024\nid,name\n1,a\n", 2,
			"expected 1 field (as in the header), found 2"},
		{"byte order mark and CRLF", "\xef\xbb\xbfid,name\r\n1,a\r\n2,b,c\r\n", 3,
			"expected 2 fields (as in the header), found 3"},
		{"line breaks inside quotes",
			"id,name\n1,\"two\nlines\"\n2,\"three\r\nmore\nlines\"\n3,c,d\n", 7,
			"expected 2 fields (as in the header), found 3"},
		{"row longer than DuckDB reads", longRow, 3, "row of 2000004 bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			path := writeCSV(t, "companies.csv", c.content)
			_, batches, err := readCSV(t, sources.CSVOptions{Paths: []string{path}})
			assertCSVError(t, err, path, c.line, c.reason)
			if batches != 0 {
				t.Errorf("%d batches handed on before the error, want 0", batches)
			}
		})
	}
}

// assertCSVError checks that err is a *sources.CSVError for file and line
// whose message names all three and holds reason.
func assertCSVError(t *testing.T, err error, file string, line int64, reason string) {
	t.Helper()
	var ce *sources.CSVError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T), want a *sources.CSVError", err, err)
	}
	if ce.File != file || ce.Line != line {
		t.Errorf("error at %s line %d, want %s line %d (%v)", ce.File, ce.Line, file, line, err)
	}
	msg := err.Error()
	for _, want := range []string{fmt.Sprintf("%q", file), fmt.Sprintf("line %d: ", line), reason} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
}

func TestCSV_ValueThatDoesNotFitTheSniffedType(t *testing.T) {
	t.Parallel()

	// The sniffer types n from a sample of the first rows as BIGINT;
	// row 49,999 (line 50,001) holds text. The check finds it before a
	// single row is handed on, names the column, and counts the others.
	content := numbered(60000, 49999, "oops")
	content = strings.Replace(content, "\n55000,55000\n", "\nx55000,n/a\n", 1)
	path := writeCSV(t, "numbers.csv", content)
	_, batches, err := readCSV(t, sources.CSVOptions{Paths: []string{path}})
	assertCSVError(t, err, path, 50001, `column "n": could not convert string "oops" to 'BIGINT'`)
	second := "; 1 more row does not fit its column types (line 55002);"
	if msg := err.Error(); !strings.Contains(msg, second) {
		t.Errorf("error %q does not point at the second bad row", msg)
	}
	if batches != 0 {
		t.Errorf("%d batches handed on before the error, want 0", batches)
	}

	// Many bad rows: the first is named, the count and some lines of the
	// others follow.
	var many strings.Builder
	many.WriteString("id,n\n")
	for i := 0; i < 30000; i++ {
		if i >= 25000 && i < 25010 {
			fmt.Fprintf(&many, "%d,n/a\n", i)
		} else {
			fmt.Fprintf(&many, "%d,%d\n", i, i)
		}
	}
	path = writeCSV(t, "many.csv", many.String())
	_, _, err = readCSV(t, sources.CSVOptions{Paths: []string{path}})
	assertCSVError(t, err, path, 25002,
		"9 more rows do not fit their column types (lines 25003, 25004, 25005, 25006, 25007, ...)")

	// Counted in lines as an editor shows them, past quoted line breaks
	// and blank lines, with CRLF line endings and a byte order mark.
	var b strings.Builder
	b.WriteString("\xef\xbb\xbfid,note,n\r\n")
	for i := 0; i < 30000; i++ {
		note := "plain"
		if i%1000 == 5 {
			note = "\"two\r\nlines\""
		}
		n := fmt.Sprint(i)
		if i == 25000 {
			n = "12 apples"
		}
		fmt.Fprintf(&b, "%d,%s,%s\r\n", i, note, n)
		if i == 100 {
			b.WriteString("\r\n")
		}
	}
	path = writeCSV(t, "notes.csv", b.String())
	_, _, err = readCSV(t, sources.CSVOptions{Paths: []string{path}})
	// Header line 1, row i on line i+2, plus 25 quoted line breaks and one
	// blank line before row 25,000.
	assertCSVError(t, err, path, 25000+2+25+1, `column "n": could not convert string "12 apples"`)
}

func TestCSV_TypeSniffedFromTextKeepsEveryRow(t *testing.T) {
	t.Parallel()

	// Text within the sample makes the column VARCHAR: every row is read.
	path := writeCSV(t, "early.csv", numbered(5000, 10, "oops"))
	src, err := sources.NewCSV(sources.CSVOptions{Paths: []string{path}})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	cols, err := src.Columns(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if cols[1].DuckDBType != "VARCHAR" {
		t.Errorf("column n typed %s, want VARCHAR", cols[1].DuckDBType)
	}
	if n, err := src.Count(context.Background()); err != nil || n != 5000 {
		t.Errorf("count = %d, %v; want 5000", n, err)
	}
}

func TestCSV_WellFormedOddities(t *testing.T) {
	t.Parallel()
	no := false
	cases := []struct {
		name    string
		content string
		header  *bool
		cols    []string
		rows    [][]any
	}{
		{"header only", "id,name,founded\n", nil, []string{"id", "name", "founded"}, nil},
		{"header only without a line ending", "id,name", nil, []string{"id", "name"}, nil},
		{"byte order mark", "\xef\xbb\xbfid,name\n1,a\n", nil, []string{"id", "name"},
			[][]any{{int64(1), "a"}}},
		{"CRLF", "id,name\r\n1,a\r\n2,b\r\n", nil, []string{"id", "name"},
			[][]any{{int64(1), "a"}, {int64(2), "b"}}},
		{"CR", "id,name\r1,a\r2,b", nil, []string{"id", "name"},
			[][]any{{int64(1), "a"}, {int64(2), "b"}}},
		{"a line that starts with # is a row", "code,name\n#1,a\n2,b\n", nil,
			[]string{"code", "name"}, [][]any{{"#1", "a"}, {"2", "b"}}},
		{"blank lines between rows are no rows", "id,name\n1,a\n\n2,b\n\n", nil,
			[]string{"id", "name"}, [][]any{{int64(1), "a"}, {int64(2), "b"}}},
		{"blank lines of a one-column file are NULL rows", "name\na\n\nb\n", nil, []string{"name"},
			[][]any{{"a"}, {nil}, {"b"}}},
		{"quotes inside unquoted text, spaces around quoted text",
			"id,name\n1,5\" screen\n2, \"b, c\" \n", nil, []string{"id", "name"},
			[][]any{{int64(1), `5" screen`}, {int64(2), "b, c"}}},
		{"doubled quotes", "id,name\n1,\"say \"\"hi\"\"\"\n", nil, []string{"id", "name"},
			[][]any{{int64(1), `say "hi"`}}},
		{"no header", "1,a\n2,b\n", &no, []string{"column0", "column1"},
			[][]any{{int64(1), "a"}, {int64(2), "b"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			path := writeCSV(t, "rows.csv", c.content)
			src, err := sources.NewCSV(sources.CSVOptions{Paths: []string{path}, Header: c.header})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			cols, err := src.Columns(context.Background())
			if err != nil {
				t.Fatalf("columns: %v", err)
			}
			var names []string
			for _, col := range cols {
				names = append(names, col.Name)
			}
			if !reflect.DeepEqual(names, c.cols) {
				t.Errorf("columns = %v, want %v", names, c.cols)
			}
			for _, col := range cols {
				if c.rows == nil && col.DuckDBType != "VARCHAR" {
					t.Errorf("column %s of a file without rows typed %s, want VARCHAR",
						col.Name, col.DuckDBType)
				}
			}
			if n, err := src.Count(context.Background()); err != nil || n != int64(len(c.rows)) {
				t.Errorf("count = %d, %v; want %d", n, err, len(c.rows))
			}
			var rows [][]any
			err = src.Read(context.Background(), 10, func(b pipeline.Batch) error {
				rows = append(rows, b.Rows...)
				return nil
			})
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if !reflect.DeepEqual(rows, c.rows) {
				t.Errorf("rows = %#v, want %#v", rows, c.rows)
			}
		})
	}
}

func TestCSV_ErrorNamesTheFileOfAGlob(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	files := map[string]string{
		"part-1.csv": "id,name\n1,a\n2,b\n",
		"part-2.csv": "id,name\n3,c\n4,d,e\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, _, err := readCSV(t, sources.CSVOptions{Paths: []string{filepath.Join(dir, "part-*.csv")}})
	assertCSVError(t, err, filepath.Join(dir, "part-2.csv"), 3,
		"expected 2 fields (as in the header), found 3")

	// Well-formed, the files are read in order and counted together.
	fixed := []byte("id,name\n3,c\n4,d\n")
	if err := os.WriteFile(filepath.Join(dir, "part-2.csv"), fixed, 0o644); err != nil {
		t.Fatal(err)
	}
	glob := filepath.Join(dir, "part-*.csv")
	rows, _, err := readCSV(t, sources.CSVOptions{Paths: []string{glob}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 4 || rows[0][0] != int64(1) || rows[3][0] != int64(4) {
		t.Errorf("rows = %v, want ids 1 to 4 in order", rows)
	}
}

func TestCSV_ReadChecksWithoutColumns(t *testing.T) {
	t.Parallel()
	path := writeCSV(t, "ragged.csv", "id,name\n1,a\n2,b,c\n")
	src, err := sources.NewCSV(sources.CSVOptions{Paths: []string{path}})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	calls := 0
	err = src.Read(context.Background(), 10, func(pipeline.Batch) error { calls++; return nil })
	assertCSVError(t, err, path, 3, "expected 2 fields (as in the header), found 3")
	if calls != 0 {
		t.Errorf("%d batches handed on, want 0", calls)
	}
	if _, err := src.Count(context.Background()); err == nil {
		t.Errorf("count of a malformed file: no error")
	}
}

func TestCSV_WithoutHeaderTheFirstRowSetsTheFields(t *testing.T) {
	t.Parallel()
	path := writeCSV(t, "plain.csv", "1,a\n2,b\n3\n")
	no := false
	_, _, err := readCSV(t, sources.CSVOptions{Paths: []string{path}, Header: &no})
	assertCSVError(t, err, path, 3, "expected 2 fields (as in the first row), found 1")
}

func TestCSV_FileChangedAfterTheCheck(t *testing.T) {
	t.Parallel()
	for _, changed := range []string{"id,name\n1,a\n2,b\n3,c\n", "id,name\n1,a\n"} {
		path := writeCSV(t, "growing.csv", "id,name\n1,a\n2,b\n")
		src, err := sources.NewCSV(sources.CSVOptions{Paths: []string{path}})
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		if _, err := src.Columns(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(changed), 0o644); err != nil {
			t.Fatal(err)
		}
		err = src.Read(context.Background(), 10, func(pipeline.Batch) error { return nil })
		want := fmt.Sprintf("DuckDB returned %d rows where the check counted 2",
			strings.Count(changed, "\n")-1)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("read of a file changed to %q: error %v, want one containing %q",
				changed, err, want)
		}
	}
}
