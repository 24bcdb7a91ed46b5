package sources

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/taskpipe/taskpipe/pipeline"
)

// CSVOptions configures a CSV source.
type CSVOptions struct {
	// Paths are files or globs; all files share one layout.
	Paths []string
	// Delimiter is the one-character field separator; "," when empty.
	Delimiter string
	// Header says whether the first line of each file names the columns;
	// true when nil. Without a header the columns are column0, column1, ...
	Header *bool
}

// CSV reads the rows of one or more CSV files in file order.
//
// The dialect is fixed, not sniffed: the delimiter and header of the
// options, fields quoted with " and a quote inside a quoted field doubled
// (RFC 4180), UTF-8 (a byte order mark is skipped), lines ending in \n,
// \r\n or \r, no comment lines, no skipped lines. Column types are
// detected by DuckDB's CSV sniffer from a sample of the rows (BIGINT,
// DOUBLE, DATE, BOOLEAN, VARCHAR, ...).
//
// Before it returns a column or a row, the source checks every file to
// the end: first its structure (a *CSVError names the file, the line and
// the reason for a row with too many or too few fields, an unterminated
// quote, invalid UTF-8, ...), then every value against its column's type
// in DuckDB (a *CSVError names the first value that does not convert and
// how many more do not). No row is ever skipped: the rows read are
// counted against the rows the check found.
type CSV struct {
	*queryReader
	files  []string
	delim  string
	header bool
	// dialect holds the read_csv options every query over the files uses.
	dialect string

	// checked is set once check has run to the end; checkErr and rows are
	// its result.
	checked  bool
	checkErr error
	rows     int64
}

var (
	_ pipeline.Source  = (*CSV)(nil)
	_ pipeline.Counter = (*CSV)(nil)
)

// csvRejectsKept bounds the rows that do not fit their column's type which
// DuckDB records per file while the values are checked.
const csvRejectsKept = 1000

// NewCSV checks opts and opens the source. The files are read when the
// source's columns, count or rows are first asked for.
func NewCSV(opts CSVOptions) (*CSV, error) {
	files, err := expandPaths("csv", opts.Paths)
	if err != nil {
		return nil, err
	}
	delim := opts.Delimiter
	if delim == "" {
		delim = ","
	}
	if utf8.RuneCountInString(delim) != 1 {
		return nil, fmt.Errorf("csv source: delimiter: must be one character, not %q", delim)
	}
	if delim == "\n" || delim == "\r" || delim == `"` {
		return nil, fmt.Errorf("csv source: delimiter: %q cannot separate fields", delim)
	}
	header := true
	if opts.Header != nil {
		header = *opts.Header
	}

	// Pin every option of the dialect: given a malformed file, DuckDB's
	// sniffer picks whatever dialect makes it fit, and reads a file with a
	// ragged row as one column and an unterminated quote as text, and may
	// take a line that starts with # for a comment or skip the lines
	// before an odd one.
	dialect := fmt.Sprintf("delim = %s, quote = '\"', escape = '\"', header = %t, comment = '', "+
		"skip = 0, strict_mode = true, null_padding = false",
		quoteString(delim), header)
	q := "SELECT * FROM read_csv(" + stringList(files) + ", " + dialect
	if len(files) > 1 {
		q += ", union_by_name = true"
	}
	q += ")"
	r, err := openQueryReader("", q, describeFiles("csv", files))
	if err != nil {
		return nil, err
	}
	return &CSV{queryReader: r, files: files, delim: delim, header: header, dialect: dialect}, nil
}

// Files returns the files the source reads, globs expanded.
func (c *CSV) Files() []string { return c.files }

// Columns checks the files (once) and describes their columns.
func (c *CSV) Columns(ctx context.Context) ([]pipeline.Column, error) {
	if err := c.check(ctx); err != nil {
		return nil, err
	}
	return c.queryReader.Columns(ctx)
}

// Count returns the number of rows of all files, counted when they were
// checked: after Columns it costs nothing.
func (c *CSV) Count(ctx context.Context) (int64, error) {
	if err := c.check(ctx); err != nil {
		return 0, err
	}
	return c.rows, nil
}

// Read checks the files (once), then streams their rows in batches. It
// fails if DuckDB returns another number of rows than the check counted,
// which only a file changed since the check can cause.
func (c *CSV) Read(ctx context.Context, batchSize int, fn func(pipeline.Batch) error) error {
	if err := c.check(ctx); err != nil {
		return err
	}
	var n int64
	var fnErr error
	err := c.queryReader.Read(ctx, batchSize, func(b pipeline.Batch) error {
		n += int64(len(b.Rows))
		fnErr = fn(b)
		return fnErr
	})
	switch {
	case err != nil && (err == fnErr || err == ctx.Err()):
		return err
	case err != nil:
		return shortenDuckDBError(err)
	case n != c.rows:
		return fmt.Errorf("read %s: DuckDB returned %d rows where the check counted %d; "+
			"did a file change while it was read?", c.what, n, c.rows)
	}
	return nil
}

// check checks every file to the end, once; a check stopped by ctx is run
// again next time.
func (c *CSV) check(ctx context.Context) error {
	if c.checked {
		return c.checkErr
	}
	rows, err := c.checkFiles(ctx)
	if err != nil && ctx.Err() != nil {
		return err
	}
	c.checked, c.checkErr, c.rows = true, err, rows
	return err
}

// checkFiles checks the structure of every file, then every value against
// the column types, and returns the number of rows.
func (c *CSV) checkFiles(ctx context.Context) (int64, error) {
	// Structure first, in Go: DuckDB reports most faults of structure
	// without their line, or only as a failure to sniff the file.
	counts := make([]int64, len(c.files))
	for i, f := range c.files {
		n, err := scanCSVFile(ctx, f, c.delim, c.header)
		if err != nil {
			return 0, err
		}
		counts[i] = n
	}

	// Then the types DuckDB detects for the columns, and every value of
	// every file converted to them, as the rows will be read.
	cols, err := c.queryReader.Columns(ctx)
	if err != nil {
		return 0, shortenDuckDBError(err)
	}
	var total int64
	for i, f := range c.files {
		if err := c.checkValues(ctx, f, cols, counts[i]); err != nil {
			return 0, err
		}
		total += counts[i]
	}
	return total, nil
}

// csvReject is a row DuckDB could not convert to the column types.
type csvReject struct {
	bytePos sql.NullInt64 // from 1: where the failing field starts
	line    int64         // DuckDB's row number, a fallback for bytePos
	column  sql.NullString
	kind    string // DuckDB's error type: CAST, ...
	message string
}

// checkValues converts every value of file, which holds rows rows, to its
// column's type. DuckDB's reject tables record the rows that do not
// convert (union_by_name, which several files are read with, cannot record
// them, hence one file at a time with the types of all files).
func (c *CSV) checkValues(ctx context.Context, file string, cols []pipeline.Column,
	rows int64) error {
	conn, err := c.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("read csv %q: %w", file, err)
	}
	defer conn.Close()
	defer func() {
		_, _ = conn.ExecContext(context.WithoutCancel(ctx),
			"DROP TABLE IF EXISTS taskpipe_csv_rejects; DROP TABLE IF EXISTS taskpipe_csv_scans")
	}()

	// hash(COLUMNS(*)) makes DuckDB convert every column; a bare count(*)
	// would convert none.
	types := make([]string, len(cols))
	for i, col := range cols {
		types[i] = quoteString(col.Name) + ": " + quoteString(col.DuckDBType)
	}
	q := fmt.Sprintf("SELECT count(*) FROM read_csv(%s, %s, types = {%s}, store_rejects = true, "+
		"rejects_table = 'taskpipe_csv_rejects', rejects_scan = 'taskpipe_csv_scans', "+
		"rejects_limit = %d) WHERE hash(COLUMNS(*)) IS NOT NULL",
		quoteString(file), c.dialect, strings.Join(types, ", "), csvRejectsKept)
	var read int64
	if err := conn.QueryRowContext(ctx, q).Scan(&read); err != nil {
		return shortenDuckDBError(fmt.Errorf("read csv %q: %w", file, err))
	}
	switch {
	case read == rows:
		return nil
	case read > rows:
		return fmt.Errorf("read csv %q: DuckDB found %d rows where taskpipe's check counted %d",
			file, read, rows)
	}

	// Some rows did not convert: name the first and where the others are.
	rejects, err := firstRejects(ctx, conn, 6)
	if err != nil {
		return fmt.Errorf("read csv %q: %w", file, err)
	}
	if len(rejects) == 0 {
		return fmt.Errorf("read csv %q: DuckDB returned %d of the %d rows and said nothing "+
			"of the others", file, read, rows)
	}
	lines, err := rejectLines(file, rejects)
	if err != nil {
		return err
	}
	return rejectError(file, rows-read, rejects, lines)
}

// rejectError describes the first of bad rows that do not convert, on
// lines, and lists the lines of the others.
func rejectError(file string, bad int64, rejects []csvReject, lines []int64) *CSVError {
	first := rejects[0]
	reason := cutRunes(first.message, 300)
	if first.column.Valid {
		reason = fmt.Sprintf("column %q: %s", first.column.String, rejectMessage(first.message))
	}
	if bad > 1 {
		more := make([]string, 0, len(lines)-1)
		for _, l := range lines[1:] {
			more = append(more, fmt.Sprint(l))
		}
		if int64(len(more)) < bad-1 {
			more = append(more, "...")
		}
		what := "rows do not fit their column types (lines"
		if bad == 2 {
			what = "row does not fit its column types (line"
		}
		reason += fmt.Sprintf("; %d more %s %s)", bad-1, what, strings.Join(more, ", "))
	}
	if first.kind == "CAST" {
		reason += "; the types are DuckDB's guess from a sample of the rows: fix the values, " +
			"or cast them in a duckdb source query over read_csv"
	}
	return &CSVError{File: file, Line: lines[0], Reason: reason}
}

// firstRejects returns the first failure of up to n rows of the reject
// table, in file order.
func firstRejects(ctx context.Context, conn *sql.Conn, n int) ([]csvReject, error) {
	rows, err := conn.QueryContext(ctx, fmt.Sprintf(`
		SELECT byte_position, line, column_name, error_type::VARCHAR, error_message
		FROM taskpipe_csv_rejects
		QUALIFY row_number() OVER (PARTITION BY line ORDER BY byte_position) = 1
		ORDER BY byte_position, line LIMIT %d`, n))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []csvReject
	for rows.Next() {
		var r csvReject
		if err := rows.Scan(&r.bytePos, &r.line, &r.column, &r.kind, &r.message); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// rejectLines turns the byte positions DuckDB gives rejected rows into
// lines as an editor counts them (DuckDB's own line numbers count rows,
// not the line breaks inside quoted fields). A row with no usable byte
// position keeps DuckDB's number.
func rejectLines(file string, rejects []csvReject) ([]int64, error) {
	var offsets []int64
	for _, r := range rejects {
		if r.bytePos.Int64 > 0 {
			offsets = append(offsets, r.bytePos.Int64-1)
		}
	}
	found, err := csvLinesAt(file, offsets)
	if err != nil {
		return nil, err
	}
	lines := make([]int64, len(rejects))
	for i, r := range rejects {
		if r.bytePos.Int64 > 0 {
			lines[i], found = found[0], found[1:]
		} else {
			lines[i] = r.line
		}
	}
	return lines, nil
}

// rejectMessage drops the part of DuckDB's message that the error already
// says ("Error when converting column "n". ") and cuts it short.
func rejectMessage(msg string) string {
	const prefix = "Error when converting column"
	if i := strings.Index(msg, ". "); strings.HasPrefix(msg, prefix) && i > 0 {
		msg = msg[i+2:]
	}
	msg = strings.TrimSpace(msg)
	if msg != "" {
		msg = strings.ToLower(msg[:1]) + msg[1:]
	}
	return cutRunes(msg, 300)
}

// shortenDuckDBError keeps DuckDB's message but cuts what can be huge:
// its CSV errors quote the whole offending line, and list every option.
func shortenDuckDBError(err error) error {
	msg := err.Error()
	if len(msg) <= 600 && strings.Count(msg, "\n") <= 8 {
		return err
	}
	lines := strings.Split(msg, "\n")
	if len(lines) > 8 {
		lines = append(lines[:8], "...")
	}
	for i, l := range lines {
		lines[i] = cutRunes(l, 300)
	}
	return &shortError{msg: strings.Join(lines, "\n"), err: err}
}

// shortError is an error with a shorter message than the error it wraps.
type shortError struct {
	msg string
	err error
}

func (e *shortError) Error() string { return e.msg }
func (e *shortError) Unwrap() error { return e.err }

// cutRunes cuts s to at most n runes, marking the cut.
func cutRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n]) + "..."
}
