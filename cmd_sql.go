package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/taskpipe/taskpipe/sinks"
)

// sqlCmd is `taskpipe sql`: a query against a DuckDB database, for looking
// at result tables where no DuckDB shell is installed.
type sqlCmd struct {
	Database string        `arg:"" help:"DuckDB database file (opened read-only), or :memory: to query files such as a Parquet sink with read_parquet('out.parquet')."`
	Query    string        `arg:"" help:"SQL to run, e.g. \"SELECT * FROM company_research LIMIT 5\"."`
	JSON     bool          `help:"Print one JSON object per row instead of a table."`
	Wait     time.Duration `help:"How long to wait for a database file another process holds for writing; a running pipeline lets go of its file at least every 10 s." default:"30s"`
	MaxWidth int           `name:"max-width" help:"Cut table cells longer than this many characters, ending them with ... (0: no limit)." default:"60"`
}

// Run executes the query and prints its rows.
func (c *sqlCmd) Run(cli *CLI, log *slog.Logger) error {
	ctx := context.Background()
	if c.MaxWidth < 0 {
		return withExitCode(exitUsage, errors.New("sql: --max-width must not be negative"))
	}
	var db *sql.DB
	var err error
	if c.Database == ":memory:" {
		db, err = sinks.OpenDuckDB("")
	} else if _, serr := os.Stat(c.Database); serr != nil {
		return withExitCode(exitUsage, fmt.Errorf("sql: database %s: %w", c.Database, serr))
	} else {
		waitCtx, cancel := context.WithTimeout(ctx, c.Wait)
		db, err = sinks.OpenWhenFree(waitCtx,
			func() (*sql.DB, error) { return sinks.OpenDuckDBReadOnly(c.Database) },
			func(waited time.Duration) {
				log.Info("waiting for another process to let go of the database file",
					"file", c.Database, "waited", waited.Round(time.Second))
			})
		cancel()
		if sinks.IsLockConflict(err) {
			return withExitCode(exitUsage, fmt.Errorf("sql: %s was still held by another "+
				"process after --wait %s (a running pipeline lets go of it at least every 10 s; "+
				"wait longer): %w", c.Database, c.Wait, err))
		}
	}
	if err != nil {
		return withExitCode(exitUsage, fmt.Errorf("sql: %w", err))
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, c.Query)
	if err != nil {
		return withExitCode(exitUsage, fmt.Errorf("sql: %w", err))
	}
	defer rows.Close()
	if c.JSON {
		return printJSONRows(os.Stdout, rows)
	}
	return printTable(os.Stdout, rows, c.MaxWidth)
}

// printTable writes rows as aligned columns under a header, cutting cells
// longer than maxWidth characters (0: no limit).
func printTable(w io.Writer, rows *sql.Rows, maxWidth int) error {
	cols, err := rows.Columns()
	if err != nil {
		return fmt.Errorf("sql: %w", err)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(cols, "\t"))
	n := 0
	err = scanRows(rows, len(cols), func(vals []any) {
		cells := make([]string, len(vals))
		for i, v := range vals {
			cells[i] = cell(v, maxWidth)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
		n++
	})
	if err != nil {
		return err
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "(%d rows)\n", n)
	return nil
}

// printJSONRows writes one JSON object per row.
func printJSONRows(w io.Writer, rows *sql.Rows) error {
	cols, err := rows.Columns()
	if err != nil {
		return fmt.Errorf("sql: %w", err)
	}
	enc := json.NewEncoder(w)
	var encErr error
	err = scanRows(rows, len(cols), func(vals []any) {
		obj := make(map[string]any, len(cols))
		for i, c := range cols {
			obj[c] = vals[i]
		}
		if encErr == nil {
			encErr = enc.Encode(obj)
		}
	})
	if err != nil {
		return err
	}
	return encErr
}

// scanRows reads every row and hands its values to fn, DATE values as
// "2024-01-01" and TIMESTAMP values as RFC 3339 strings (see timeText).
func scanRows(rows *sql.Rows, n int, fn func([]any)) error {
	types, err := rows.ColumnTypes()
	if err != nil {
		return fmt.Errorf("sql: %w", err)
	}
	for rows.Next() {
		vals := make([]any, n)
		ptrs := make([]any, n)
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return fmt.Errorf("sql: read row: %w", err)
		}
		for i, v := range vals {
			if t, ok := v.(time.Time); ok && i < len(types) {
				vals[i] = timeText(t, types[i].DatabaseTypeName())
			}
		}
		fn(vals)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("sql: %w", err)
	}
	return nil
}

// timeText renders a time value of a column of DuckDB type typeName: a
// DATE as its day, a TIME as its clock time, a TIMESTAMP (with or without
// time zone) in RFC 3339.
func timeText(t time.Time, typeName string) string {
	switch strings.ToUpper(typeName) {
	case "DATE":
		return t.Format(time.DateOnly)
	case "TIME", "TIMETZ", "TIME WITH TIME ZONE":
		return t.Format("15:04:05.999999")
	}
	return t.Format(time.RFC3339Nano)
}

// cell renders one value on one line: NULL, scalars as text, lists and
// structs as JSON, text longer than maxWidth characters cut (0: no limit).
func cell(v any, maxWidth int) string {
	var s string
	switch x := v.(type) {
	case nil:
		return "NULL"
	case []byte:
		s = string(x)
	case string:
		s = x
	case []any, map[string]any:
		b, err := json.Marshal(x)
		if err != nil {
			s = fmt.Sprint(x)
		} else {
			s = string(b)
		}
	default:
		s = fmt.Sprint(x)
	}
	s = strings.ReplaceAll(s, "\n", " ")
	if r := []rune(s); maxWidth > 0 && len(r) > maxWidth {
		if maxWidth <= 3 {
			return string(r[:maxWidth])
		}
		s = string(r[:maxWidth-3]) + "..."
	}
	return s
}
