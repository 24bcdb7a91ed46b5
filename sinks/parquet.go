package sinks

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"github.com/taskpipe/taskpipe/specs"
)

// Parquet is the sink that writes one Parquet file with the same typed
// columns as the DuckDB sink.
//
// Parquet files cannot be updated in place, so rows are upserted into a
// DuckDB state database beside the file (.<name>.taskpipe.duckdb, on disk,
// so memory stays bounded whatever the row count) by a DuckDB sink, with
// the thread count and memory cap (SinkMemoryLimit) of a sink's own
// database, and the file is written on Close, in the order rows were
// written: first to a temporary file in the same folder, then renamed over
// the target, so a crash never leaves a half-written file and readers see
// either the old file or the new one. Rows are visible in the file only
// after Close. The state database is removed once the file is published;
// after a crash it is kept and the next Open resumes from it. When there is
// no state database but the file exists, Open loads the file's rows first,
// so a re-run keeps what an earlier run published.
type Parquet struct {
	path  string
	state string // the state database file
	db    *sql.DB
	inner *DuckDB
	table specs.Table
	// loaded is set when Open copied rows of an earlier published file.
	loaded bool
}

var _ Sink = (*Parquet)(nil)

// parquetStateTable is the table of the state database.
const parquetStateTable = "results"

// NewParquet returns a sink that writes the Parquet file at path.
func NewParquet(path string) *Parquet {
	dir, base := filepath.Split(path)
	return &Parquet{path: path, state: filepath.Join(dir, "."+base+".taskpipe.duckdb")}
}

// Open opens the state database, loading the published file when starting
// afresh. When it fails, nothing is published on Close, and a state
// database it created is removed again.
func (p *Parquet) Open(ctx context.Context, t specs.Table) error {
	_, statErr := os.Stat(p.state)
	resuming := statErr == nil
	if err := p.open(ctx, t, resuming); err != nil {
		p.abandon(resuming)
		if resuming && errors.Is(err, ErrColumnsDiffer) {
			return fmt.Errorf("open parquet sink %s: the rows an interrupted run kept in %s "+
				"have other columns (remove that file to start over, or name another path): %w",
				p.path, p.state, err)
		}
		return fmt.Errorf("open parquet sink %s: %w", p.path, err)
	}
	return nil
}

// open opens the state database and its table, and loads the published
// file unless resuming.
func (p *Parquet) open(ctx context.Context, t specs.Table, resuming bool) error {
	db, err := OpenDuckDB(p.state)
	if err != nil {
		return err
	}
	p.db, p.table = db, t
	if err := setSinkDatabase(ctx, db, true); err != nil {
		return err
	}
	p.inner = NewDuckDB(db, parquetStateTable)
	if err := p.inner.Open(ctx, t); err != nil {
		return err
	}
	if resuming {
		return nil
	}
	if _, err := os.Stat(p.path); err != nil {
		return nil // nothing published yet
	}
	p.inner.assumeRowsExist()
	if err := p.loadPublished(ctx); err != nil {
		return err
	}
	p.loaded = true
	return nil
}

// abandon closes what a failed Open opened, so that Close publishes
// nothing, and removes the state database unless it held an interrupted
// run's rows.
func (p *Parquet) abandon(resuming bool) {
	if p.inner != nil {
		_ = p.inner.Close(context.Background())
		p.inner = nil
	}
	if p.db != nil {
		_ = p.db.Close()
		p.db = nil
	}
	if !resuming {
		_ = p.removeState()
	}
}

// OpenedEmpty reports whether the sink started with no rows: no published
// file and no rows kept from an interrupted run.
func (p *Parquet) OpenedEmpty() bool { return p.inner != nil && p.inner.OpenedEmpty() && !p.loaded }

// loadPublished copies the rows of the existing file into the state
// database, after checking that its columns are the table's.
func (p *Parquet) loadPublished(ctx context.Context) error {
	src := "read_parquet(" + specs.QuoteLiteral(p.path) + ")"
	rows, err := p.db.QueryContext(ctx, "DESCRIBE SELECT * FROM "+src)
	if err != nil {
		return fmt.Errorf("read existing file: %w", err)
	}
	var have []describedColumn
	for rows.Next() {
		var name, typ string
		var null, key, def, extra sql.NullString
		if err := rows.Scan(&name, &typ, &null, &key, &def, &extra); err != nil {
			rows.Close()
			return fmt.Errorf("read existing file: %w", err)
		}
		have = append(have, describedColumn{name: name, typ: parquetComparable(typ)})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read existing file: %w", err)
	}
	want, err := p.inner.describe(ctx, "current_database()", "current_schema()",
		parquetStateTable, "")
	if err != nil {
		return fmt.Errorf("read state table: %w", err)
	}
	for i := range want {
		want[i].typ = parquetComparable(want[i].typ)
	}
	if err := compareColumns(have, want); err != nil {
		return fmt.Errorf("the published file (remove it or name another path): %w", err)
	}
	_, err = p.db.ExecContext(ctx, "INSERT INTO "+specs.QuoteIdent(parquetStateTable)+
		" SELECT * FROM "+src)
	if err != nil {
		return fmt.Errorf("load existing file: %w", err)
	}
	return nil
}

// enumOrJSON matches the types Parquet stores as plain strings.
var enumOrJSON = regexp.MustCompile(`ENUM\('(?:[^']|'')*'(?:, '(?:[^']|'')*')*\)|\bJSON\b`)

// parquetComparable rewrites a DuckDB type as it reads back from Parquet,
// where ENUM and JSON values are strings.
func parquetComparable(typ string) string {
	return enumOrJSON.ReplaceAllString(typ, "VARCHAR")
}

// Write upserts a batch into the state database.
func (p *Parquet) Write(ctx context.Context, rows []Row) error {
	if p.inner == nil {
		return errors.New("write parquet sink: not open")
	}
	return p.inner.Write(ctx, rows)
}

// Close writes the file, publishes it with a rename and removes the state
// database.
func (p *Parquet) Close(ctx context.Context) error {
	if p.inner == nil {
		return nil
	}
	err := p.publish(ctx)
	err = errors.Join(err, p.inner.Close(ctx), p.db.Close())
	p.inner = nil
	if err != nil {
		return fmt.Errorf("close parquet sink %s: %w", p.path, err)
	}
	if err := p.removeState(); err != nil {
		return fmt.Errorf("close parquet sink %s: %w", p.path, err)
	}
	return nil
}

// removeState removes the state database and its write-ahead log.
func (p *Parquet) removeState() error {
	for _, f := range []string{p.state, p.state + ".wal"} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// publish writes the rows, in the order they were written, to a temporary
// file and renames it over the target. The file is not sorted by key:
// sorting the whole table needs it in memory (DuckDB cannot spill a sort of
// the nested basis column within SinkMemoryLimit), while a plain copy
// streams it, so memory stays bounded whatever the row count.
func (p *Parquet) publish(ctx context.Context) error {
	tmp, err := os.CreateTemp(filepath.Dir(p.path), "."+filepath.Base(p.path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("create temporary file: %w", err)
	}
	tmpPath := tmp.Name()
	tmp.Close()
	defer os.Remove(tmpPath) // a no-op once renamed

	// Writing the file compresses the whole table: let DuckDB use every
	// core for it, with the rows written so far checkpointed out of memory
	// first.
	for _, stmt := range []string{"CHECKPOINT", "RESET threads"} {
		if _, err := p.db.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("write parquet: %w", err)
		}
	}
	copySQL := "COPY " + specs.QuoteIdent(parquetStateTable) + " TO " +
		specs.QuoteLiteral(tmpPath) + " (FORMAT parquet, COMPRESSION zstd)"
	if _, err := p.db.ExecContext(ctx, copySQL); err != nil {
		return fmt.Errorf("write parquet: %w", err)
	}
	if err := syncFile(tmpPath); err != nil {
		return err
	}
	if err := os.Rename(tmpPath, p.path); err != nil {
		return fmt.Errorf("publish parquet: %w", err)
	}
	return nil
}

// syncFile flushes a written file to disk before it is renamed into place.
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("sync parquet: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync parquet: %w", err)
	}
	return nil
}
