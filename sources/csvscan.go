package sources

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"
)

// csvMaxRowBytes is the longest row, line ending included, that DuckDB's
// CSV reader accepts by default (its max_line_size).
const csvMaxRowBytes = 2_000_000

// csvScanBuffer is how much of a file the scanner holds at a time.
const csvScanBuffer = 1 << 20

// CSVError reports a malformed CSV file: the file, the line (from 1, as an
// editor counts them, quoted line breaks included) where the fault is, and
// why. The csv source returns it before any row is read.
type CSVError struct {
	// File is the path of the file, as the source was given it.
	File string
	// Line is the line of the fault, from 1.
	Line int64
	// Reason says what is wrong, DuckDB's words where they are clear.
	Reason string
}

// Error reads `read csv "FILE": line N: REASON`.
func (e *CSVError) Error() string {
	return fmt.Sprintf("read csv %q: line %d: %s", e.File, e.Line, e.Reason)
}

// csvScanner checks the structure of one CSV file in the dialect the csv
// source hands DuckDB (RFC 4180: fields quoted with ", a quote inside a
// quoted field doubled) and counts its rows. It accepts what DuckDB's
// strict parser accepts: a quote inside an unquoted field is text, spaces
// may surround a quoted field, blank lines between rows of a file with
// more than one column are no rows. What DuckDB would reject, or report
// without a usable line number, it reports with its line: a row with too
// many or too few fields, an unterminated quote, text after a closing
// quote, invalid UTF-8, mixed line endings, a row too long for DuckDB; and
// what DuckDB would quietly paper over: an empty file or header line and
// duplicate column names (DuckDB renames them).
type csvScanner struct {
	path   string
	delim  []byte
	header bool

	// The window on the file: buf[i:n] is unread; base is the file offset
	// of buf[0].
	r    io.Reader
	buf  []byte
	i, n int
	base int64
	eof  bool

	// line is the line of buf[i]; newline the file's line ending once one
	// is seen, on line newlineAt.
	line      int64
	newline   string
	newlineAt int64

	// The row being scanned: where it starts, its fields so far, whether
	// it holds any byte yet; quoteLine is where its open quote opened.
	rowLine   int64
	rowStart  int64
	fields    int
	blank     bool
	quoteLine int64
	// names collects the header's column names (cur the current one).
	capture bool
	cur     []byte
	names   []string

	// want is the number of fields of every row, known after the first.
	want int
	rows int64
}

// csvState is where the scanner is inside a field.
type csvState int

const (
	atFieldStart    csvState = iota // nothing but spaces yet
	inUnquoted                      // inside an unquoted field
	inQuoted                        // inside a quoted field
	afterQuote                      // just after a quote inside a quoted field
	afterQuoteSpace                 // spaces after a closing quote
)

// scanCSVFile checks path and returns the number of rows it holds (the
// header not counted).
func scanCSVFile(ctx context.Context, path, delim string, header bool) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("read csv %q: %w", path, err)
	}
	defer f.Close()
	s := newCSVScanner(path, f, delim, header, csvScanBuffer)
	if err := s.scan(ctx); err != nil {
		return 0, err
	}
	return s.rows, nil
}

// newCSVScanner makes a scanner of r, named path in errors, that holds
// size bytes (at least 4) at a time.
func newCSVScanner(path string, r io.Reader, delim string, header bool, size int) *csvScanner {
	return &csvScanner{path: path, delim: []byte(delim), header: header, r: r,
		buf: make([]byte, size), line: 1, rowLine: 1, blank: true, capture: header}
}

// fill moves the unread bytes to the front of the buffer and reads more,
// so that at least four bytes (a whole UTF-8 rune, a CRLF, a delimiter)
// are there to look at unless the file ends first.
func (s *csvScanner) fill() error {
	if s.i > 0 {
		s.base += int64(s.i)
		s.n = copy(s.buf, s.buf[s.i:s.n])
		s.i = 0
	}
	for !s.eof && s.n < len(s.buf) {
		m, err := s.r.Read(s.buf[s.n:])
		s.n += m
		if errors.Is(err, io.EOF) {
			s.eof = true
		} else if err != nil {
			return fmt.Errorf("read csv %q: %w", s.path, err)
		}
		if s.n >= 4 {
			break
		}
	}
	return nil
}

func (s *csvScanner) fail(line int64, format string, args ...any) error {
	return &CSVError{File: s.path, Line: line, Reason: fmt.Sprintf(format, args...)}
}

// scan runs the state machine over the whole file.
func (s *csvScanner) scan(ctx context.Context) error {
	if err := s.fill(); err != nil {
		return err
	}
	// A UTF-8 byte order mark is no part of the first column's name;
	// DuckDB skips it too.
	if bytes.HasPrefix(s.buf[:s.n], []byte("\xef\xbb\xbf")) {
		s.i = 3
		s.rowStart = 3
	}
	state := atFieldStart
	for {
		// Keep four bytes in view (a CRLF, a rune, a delimiter) until the
		// file ends.
		if s.n-s.i < 4 && !s.eof {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := s.fill(); err != nil {
				return err
			}
		}
		if s.i >= s.n {
			break
		}

		// Step over plain text in one tight loop: most bytes of a file are.
		if !s.capture && (state == inUnquoted || state == inQuoted) {
			s.skipText(state)
			if s.n-s.i < 4 && !s.eof {
				continue
			}
			if s.i >= s.n {
				break
			}
		}

		// Inside quotes, all but a quote is text; outside, a line ending
		// ends the row and a delimiter the field.
		var err error
		b := s.buf[s.i]
		switch {
		case state == inQuoted:
			state, err = s.stepQuoted(b)
		case b == '\n' || b == '\r':
			state, err = atFieldStart, s.endRow(b)
		case b == s.delim[0] && bytes.HasPrefix(s.buf[s.i:s.n], s.delim):
			s.endField()
			s.i += len(s.delim)
			state = atFieldStart
		default:
			state, err = s.stepText(b, state)
		}
		if err != nil {
			return err
		}
	}

	// The end of the file ends the last row, unless a quote is still open.
	if state == inQuoted {
		return s.fail(s.quoteLine, "field %d: unterminated quoted field: the quote that opens it "+
			"is never closed", s.fields+1)
	}
	if !s.blank || s.fields > 0 {
		return s.endRow(0)
	}
	if s.want == 0 && s.header {
		return s.fail(1, "empty file: expected a header line naming the columns")
	}
	if s.want == 0 {
		return s.fail(1, "empty file")
	}
	return nil
}

// skipText steps over the bytes of a field that need no look: all but
// quotes inside quotes, all but the delimiter outside, line endings and
// multi-byte runes in both.
func (s *csvScanner) skipText(state csvState) {
	special := s.delim[0]
	if state == inQuoted {
		special = '"'
	}
	j := s.i
	for j < s.n {
		if c := s.buf[j]; c == special || c == '\n' || c == '\r' || c >= utf8.RuneSelf {
			break
		}
		j++
	}
	s.i = j
}

// stepQuoted takes byte b inside a quoted field. Line breaks are counted
// (\r\n, \n and a lone \r each end a line) so that later lines are
// numbered as an editor shows them.
func (s *csvScanner) stepQuoted(b byte) (csvState, error) {
	state := inQuoted
	switch {
	case b == '"':
		state = afterQuote
	case b == '\n':
		s.line++
	case b == '\r':
		if s.i+1 >= s.n || s.buf[s.i+1] != '\n' {
			s.line++
		}
	case b >= utf8.RuneSelf:
		return state, s.checkRune()
	}
	if s.capture && b != '"' {
		s.cur = append(s.cur, b)
	}
	s.i++
	return state, nil
}

// stepText takes byte b, neither a line ending nor the delimiter, outside
// quotes.
func (s *csvScanner) stepText(b byte, state csvState) (csvState, error) {
	s.blank = false
	switch state {
	case atFieldStart:
		// Spaces may stand before a quoted field.
		switch b {
		case ' ':
		case '"':
			state = inQuoted
			s.quoteLine = s.line
			s.cur = s.cur[:0]
		default:
			state = inUnquoted
		}
	case afterQuote:
		switch {
		case b == '"': // a doubled quote stands for one quote
			state = inQuoted
			if s.capture {
				s.cur = append(s.cur, '"')
			}
		case b == ' ':
			state = afterQuoteSpace
		case s.quoteLine < s.line:
			// The quote most likely never closed where it opened.
			return state, s.fail(s.quoteLine, "field %d: the quoted field that opens on this "+
				"line runs on to line %d, where %s follows a quote: is a closing quote missing?",
				s.fields+1, s.line, describeByte(s.buf[s.i:s.n]))
		default:
			return state, s.fail(s.line, "field %d: %s after its closing quote; a quote inside a "+
				"quoted field is written twice (\"\")", s.fields+1, describeByte(s.buf[s.i:s.n]))
		}
	case afterQuoteSpace:
		if b != ' ' {
			return state, s.fail(s.line, "field %d: %s after its closing quote", s.fields+1,
				describeByte(s.buf[s.i:s.n]))
		}
	}
	if b >= utf8.RuneSelf {
		return state, s.checkRune()
	}
	if s.capture && state == inUnquoted {
		s.cur = append(s.cur, b)
	}
	s.i++
	return state, nil
}

// checkRune checks the multi-byte UTF-8 sequence at buf[i] and steps over
// it.
func (s *csvScanner) checkRune() error {
	r, size := utf8.DecodeRune(s.buf[s.i:s.n])
	if r == utf8.RuneError && size <= 1 {
		return s.fail(s.line, "field %d: invalid UTF-8 (byte 0x%02x); the csv source reads UTF-8 "+
			"only: convert the file (e.g. iconv -f latin1 -t utf-8)", s.fields+1, s.buf[s.i])
	}
	if s.capture {
		s.cur = append(s.cur, s.buf[s.i:s.i+size]...)
	}
	s.i += size
	return nil
}

// endField closes the current field.
func (s *csvScanner) endField() {
	s.fields++
	s.blank = false
	if s.capture {
		s.names = append(s.names, strings.TrimSpace(string(s.cur)))
		s.cur = s.cur[:0]
	}
}

// endRow closes the current row at the line ending starting with b (0 at
// the end of the file): it checks the line ending against the file's, the
// row's field count against the first row's and its length, and counts it.
func (s *csvScanner) endRow(b byte) error {
	ending := ""
	switch {
	case b == '\n':
		ending = "\n"
	case b == '\r' && s.i+1 < s.n && s.buf[s.i+1] == '\n':
		ending = "\r\n"
	case b == '\r':
		ending = "\r"
	}
	if ending != "" {
		if s.newline == "" {
			s.newline, s.newlineAt = ending, s.line
		} else if ending != s.newline {
			return s.fail(s.line, "mixed line endings: this line ends in %s, line %d in %s",
				quoteEnding(ending), s.newlineAt, quoteEnding(s.newline))
		}
	}
	end := s.base + int64(s.i) + int64(len(ending))
	if size := end - s.rowStart; size > csvMaxRowBytes {
		return s.fail(s.rowLine, "row of %d bytes; DuckDB's CSV reader takes rows of at most "+
			"%d bytes", size, csvMaxRowBytes)
	}

	blank := s.blank && s.fields == 0
	s.endField()
	switch {
	case blank && s.want == 0:
		if s.header {
			return s.fail(s.rowLine, "empty header line: the first line must name the columns")
		}
		return s.fail(s.rowLine, "empty first line")
	case blank && s.want > 1:
		// A blank line between rows is no row (DuckDB skips it too); in a
		// one-column file it is a row holding NULL.
	case s.want == 0:
		s.want = s.fields
		if s.header {
			if err := s.checkNames(); err != nil {
				return err
			}
		} else {
			s.rows++
		}
	case s.fields != s.want:
		like := "the first row"
		if s.header {
			like = "the header"
		}
		return s.fail(s.rowLine, "expected %s (as in %s), found %d", fields(s.want), like, s.fields)
	default:
		s.rows++
	}

	// Start the next row after the line ending.
	s.i += len(ending)
	s.line++
	s.rowLine, s.rowStart = s.line, end
	s.fields, s.blank, s.capture = 0, true, false
	return nil
}

// checkNames refuses a header that names a column twice: DuckDB would
// rename the second (a_1), and a key or mapping could silently read the
// wrong one. Names compare as DuckDB compares them: case-insensitively,
// without surrounding spaces.
func (s *csvScanner) checkNames() error {
	seen := make(map[string]int, len(s.names))
	for i, name := range s.names {
		if name == "" {
			continue
		}
		k := strings.ToLower(name)
		if j, ok := seen[k]; ok {
			return s.fail(s.rowLine, "duplicate column name %q (fields %d and %d); column "+
				"names must be unique, compared without case", name, j+1, i+1)
		}
		seen[k] = i
	}
	s.names = nil
	return nil
}

// fields says "1 field" or "n fields".
func fields(n int) string {
	if n == 1 {
		return "1 field"
	}
	return fmt.Sprintf("%d fields", n)
}

// describeByte names the character at the start of b for an error.
func describeByte(b []byte) string {
	r, _ := utf8.DecodeRune(b)
	if r == utf8.RuneError {
		return fmt.Sprintf("byte 0x%02x", b[0])
	}
	return fmt.Sprintf("%q", r)
}

// quoteEnding names a line ending for an error.
func quoteEnding(e string) string {
	return strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(e)
}

// csvLinesAt returns the line (from 1, as scanCSVFile counts them) of each
// file offset in offsets, which must be sorted.
func csvLinesAt(path string, offsets []int64) ([]int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read csv %q: %w", path, err)
	}
	defer f.Close()
	lines := make([]int64, len(offsets))
	buf := make([]byte, csvScanBuffer)
	line, pos, k := int64(1), int64(0), 0
	prevCR := false
	for k < len(offsets) {
		m, err := f.Read(buf)
		for j := 0; j < m && k < len(offsets); j++ {
			for k < len(offsets) && offsets[k] <= pos {
				lines[k] = line
				k++
			}
			// \r\n, \n and a lone \r each end a line.
			switch buf[j] {
			case '\n':
				if !prevCR {
					line++
				}
			case '\r':
				line++
			}
			prevCR = buf[j] == '\r'
			pos++
		}
		if err != nil {
			break
		}
	}
	for ; k < len(offsets); k++ {
		lines[k] = line
	}
	return lines, nil
}
