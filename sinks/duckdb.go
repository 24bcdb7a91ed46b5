package sinks

import (
	"context"
	"crypto/rand"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/duckdb/duckdb-go/v2"
	gojson "github.com/goccy/go-json"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/specs"
)

// DuckDB is the sink that writes into a table of a DuckDB database.
//
// Each Write runs in one transaction that commits before Write returns, so
// other connections of the same process see the rows at once, and a failed
// Write leaves none of its batch. (DuckDB lets one process hold a database
// file for writing; other processes can query it once the pipeline has
// closed it, or query the Parquet sink's file.)
//
// A batch of only new keys and run_ids goes through a query appender: the
// rows are appended in Go and DuckDB runs one INSERT ... SELECT over them.
// A batch that may replace rows is appended to a temporary staging table
// instead, then a DELETE of every row sharing a key or run_id with it and
// one INSERT ... SELECT from the staging table run. Either way the basis is
// appended as its JSON text and built into the typed basis column by
// DuckDB's from_json_strict, and source-typed keys are appended as text and
// cast: appending nested values from Go costs reflection and a cgo call per
// string.
//
// Key columns are not declared a primary key: DuckDB's index constraints
// reject a delete and re-insert of one key within a transaction, and the
// set-based DELETE needs none. While a table the sink started empty only
// gains new keys, the DELETE is skipped; this costs about 20 bytes of memory
// per row written.
type DuckDB struct {
	db      *sql.DB
	ownDB   bool
	name    string // the table as written in the pipeline spec
	quoted  string // the table name, quoted
	schema  string // the table's schema, or empty for the current one
	table   specs.Table
	conn    *sql.Conn
	stage   string // the staging table's name, unquoted
	columns []specs.Column
	insert  string // INSERT ... SELECT from the staging table
	delete  string // DELETE of the rows the staged batch replaces
	// insertAppended is the INSERT ... SELECT of a batch of new rows, run
	// by a query appender over the rows appended to it.
	insertAppended string

	// written holds hashes of the keys and run_ids this sink wrote into a
	// table that was empty when opened, so that a batch of only new rows
	// skips the DELETE (a scan of the whole table). It is nil when the
	// table held rows already: their values come back from DuckDB in other
	// Go types than a source gives, so every batch then runs the DELETE.
	written map[uint64]struct{}
	seed    maphash.Seed
	// openedEmpty is set when the table held no rows at the first Open.
	openedEmpty bool
	opened      bool

	// path, for a sink that owns its database file, lets it let go of the
	// file after idle without a write, or once it has held it for maxHold,
	// and open it again at the next write, at least gap after: DuckDB
	// allows one process to hold a file for writing, and releasing it lets
	// other processes (taskpipe sql, dbt) query the rows written so far
	// while the group runs. A reader still holding the file makes the next
	// write wait for it.
	path       string
	idle       time.Duration
	maxHold    time.Duration
	gap        time.Duration
	mu         sync.Mutex
	idleTimer  *time.Timer
	released   bool
	heldSince  time.Time
	releasedAt time.Time
	log        *slog.Logger
}

// DefaultReleaseIdle is how long a sink that owns its DuckDB file holds it
// without writing before it releases the file to other processes.
const DefaultReleaseIdle = time.Second

// DefaultMaxHold is the longest a sink that owns its DuckDB file holds it
// while results keep coming; it then releases the file for
// DefaultReleaseGap, so readers get in even when the sink is never idle.
// Each release closes and reopens the database: every 10 s it costs a
// pipeline writing 20,000 rows/s a few percent (5 s cost about 10%).
const DefaultMaxHold = 10 * time.Second

// DefaultReleaseGap is the least time a released file stays released.
const DefaultReleaseGap = 100 * time.Millisecond

var _ Sink = (*DuckDB)(nil)

// NewDuckDB returns a sink that writes table name (optionally
// "schema.table") of db. The caller keeps ownership of db, which may also
// serve a DuckDB source or readers; open it with OpenDuckDB.
func NewDuckDB(db *sql.DB, name string) *DuckDB {
	schema, _, quoted := tableName(name)
	return &DuckDB{db: db, name: name, quoted: quoted, schema: schema}
}

// NewDuckDBFile returns a sink that opens the database file at path itself
// and closes it on Close.
func NewDuckDBFile(path, name string) (*DuckDB, error) {
	db, err := OpenDuckDB(path)
	if err != nil {
		return nil, err
	}
	s := NewDuckDB(db, name)
	s.ownDB = true
	s.path, s.heldSince = path, time.Now()
	s.SetRelease(DefaultReleaseIdle, DefaultMaxHold, DefaultReleaseGap)
	return s, nil
}

// SetRelease sets when a sink that owns its file releases it: after idle
// without a write, or after a write once it held the file for maxHold
// (zero: never), for at least gap.
func (s *DuckDB) SetRelease(idle, maxHold, gap time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.idle, s.maxHold, s.gap = idle, maxHold, gap
}

// SetLogger sets where a sink that owns its file reports waiting for
// another process to close it.
func (s *DuckDB) SetLogger(log *slog.Logger) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = log
}

// OpenDuckDB opens a DuckDB database file (an in-memory database when path
// is empty) with extension auto-install and auto-load turned off, so that
// nothing is fetched from the network.
func OpenDuckDB(path string) (*sql.DB, error) {
	settings := url.Values{
		"autoinstall_known_extensions": {"false"},
		"autoload_known_extensions":    {"false"},
	}
	connector, err := duckdb.NewConnector(path+"?"+settings.Encode(), nil)
	if err != nil {
		return nil, fmt.Errorf("open duckdb %q: %w", path, err)
	}
	return sql.OpenDB(connector), nil
}

// SinkMemoryLimit caps the memory of a database a sink opens itself
// (NewDuckDBFile). Written rows live in the file, so DuckDB evicts them from
// its buffer pool instead of keeping the whole table in memory (its default
// limit is 80% of the machine's memory); a batch that needs more spills to
// a temporary file next to the database. It is set with SET, not at open:
// DuckDB refuses a second connection to a file opened with other settings.
const SinkMemoryLimit = "256MB"

// SinkCheckpointThreshold is the size of write-ahead log at which a
// database a sink opens itself is checkpointed (DuckDB's default is 16 MB).
// A checkpoint writes the rows committed since the last one as new row
// groups, and later merges row groups too small to stay apart by writing
// them again. At 128 MB a checkpoint holds about 100,000 pipeline rows,
// close to a full row group (122,880 rows), so a row is written about once;
// at 16 MB the last row groups were written again every few batches. Rows
// not yet checkpointed live in the buffer pool: half of SinkMemoryLimit.
const SinkCheckpointThreshold = "128MB"

// execer runs a statement: a *sql.DB or a *sql.Conn.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// setSinkDatabase sets up a database a sink opens itself for writing: one
// DuckDB thread (a batch is too small to gain from more; extra threads only
// spin and take CPU from the pipeline), SinkCheckpointThreshold and, with
// capMemory, SinkMemoryLimit. These are settings of the whole database.
func setSinkDatabase(ctx context.Context, db execer, capMemory bool) error {
	settings := []string{"SET threads = 1",
		"SET checkpoint_threshold = '" + SinkCheckpointThreshold + "'"}
	if capMemory {
		settings = append(settings, "SET memory_limit = '"+SinkMemoryLimit+"'")
	}
	for _, stmt := range settings {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("set up sink database: %w", err)
		}
	}
	return nil
}

// OpenDuckDBReadOnly opens a DuckDB database file read-only with extension
// auto-install and auto-load turned off, for queries over result tables.
func OpenDuckDBReadOnly(path string) (*sql.DB, error) {
	settings := url.Values{
		"access_mode":                  {"READ_ONLY"},
		"autoinstall_known_extensions": {"false"},
		"autoload_known_extensions":    {"false"},
	}
	connector, err := duckdb.NewConnector(path+"?"+settings.Encode(), nil)
	if err != nil {
		return nil, fmt.Errorf("open duckdb %q: %w", path, err)
	}
	return sql.OpenDB(connector), nil
}

// OpenedEmpty reports whether the table held no rows when the sink was
// opened: a new, dropped or emptied table, which a pipeline fills with the
// rows that earlier runs completed.
func (s *DuckDB) OpenedEmpty() bool { return s.openedEmpty }

// DB returns the database the sink writes, for readers in the same
// process.
func (s *DuckDB) DB() *sql.DB { return s.db }

// Open creates the table, or checks an existing one, and prepares the
// staging table.
func (s *DuckDB) Open(ctx context.Context, t specs.Table) error {
	s.table = t
	s.columns = t.Columns()
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("open sink table %s: %w", s.name, err)
	}
	s.conn = conn
	if s.ownDB {
		if err := setSinkDatabase(ctx, conn, true); err != nil {
			return fmt.Errorf("open sink table %s: %w", s.name, err)
		}
	}

	// Create the table unless it exists; an existing one must match.
	exists, err := s.tableExists(ctx)
	if err != nil {
		return fmt.Errorf("open sink table %s: %w", s.name, err)
	}
	if !exists {
		ddl := "CREATE TABLE " + s.quoted + " (\n" + t.ColumnDefs() + "\n)"
		if _, err := conn.ExecContext(ctx, ddl); err != nil {
			return fmt.Errorf("create sink table %s: %w", s.name, err)
		}
	} else if err := s.checkColumns(ctx); err != nil {
		return err
	}
	empty := !exists
	if exists {
		var hasRows bool
		if err := conn.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM "+s.quoted+")").
			Scan(&hasRows); err != nil {
			return fmt.Errorf("open sink table %s: %w", s.name, err)
		}
		empty = !hasRows
	}
	if empty {
		s.written = map[uint64]struct{}{}
		s.seed = maphash.MakeSeed()
	}
	if !s.opened {
		s.opened, s.openedEmpty = true, empty
	}

	// The staging table holds one batch; source-typed key columns and the
	// basis (as JSON) are staged as text and cast on insert.
	s.stage = "taskpipe_stage_" + randomHex(6)
	var defs []string
	for i, c := range s.columns {
		typ := c.Type.DuckDB(t.Enums)
		if (i < len(t.Key) && c.Type.Kind == specs.KindSQL) || c.Name == specs.ColBasis {
			typ = "VARCHAR"
		}
		defs = append(defs, specs.QuoteIdent(c.Name)+" "+typ)
	}
	stageDDL := "CREATE TEMP TABLE " + specs.QuoteIdent(s.stage) + " (" +
		strings.Join(defs, ", ") + ")"
	if _, err := conn.ExecContext(ctx, stageDDL); err != nil {
		return fmt.Errorf("create staging table: %w", err)
	}
	s.prepareStatements()
	return nil
}

// prepareStatements builds the DELETE and INSERTs of a batch.
func (s *DuckDB) prepareStatements() {
	stage := "temp.main." + specs.QuoteIdent(s.stage)
	var selects, appended, keyMatch []string
	for i, c := range s.columns {
		staged := s.insertExpr(i, "st."+specs.QuoteIdent(c.Name))
		if i < len(s.table.Key) {
			keyMatch = append(keyMatch,
				staged+" IS NOT DISTINCT FROM t."+specs.QuoteIdent(c.Name))
		}
		selects = append(selects, staged)
		// A query appender names the columns of its rows col1, col2, ...
		appended = append(appended, s.insertExpr(i, "st.col"+strconv.Itoa(i+1)))
	}
	s.insert = "INSERT INTO " + s.quoted + " SELECT " + strings.Join(selects, ", ") +
		" FROM " + stage + " st"
	s.insertAppended = "INSERT INTO " + s.quoted + " SELECT " + strings.Join(appended, ", ") +
		" FROM appended_data st"
	s.delete = "DELETE FROM " + s.quoted + " t WHERE EXISTS (SELECT 1 FROM " + stage +
		" st WHERE " + strings.Join(keyMatch, " AND ") + ") OR t.run_id IN (SELECT run_id FROM " +
		stage + " WHERE run_id IS NOT NULL)"
}

// insertExpr is the value the INSERT takes for column i from its staged
// value col: source-typed keys are cast from text, the basis is built from
// its JSON text.
func (s *DuckDB) insertExpr(i int, col string) string {
	c := s.columns[i]
	switch {
	case i < len(s.table.Key) && c.Type.Kind == specs.KindSQL:
		return "CAST(" + col + " AS " + c.Type.SQL + ")"
	case c.Name == specs.ColBasis:
		return "from_json_strict(" + col + ", " + specs.QuoteLiteral(jsonStructure(c.Type)) + ")"
	}
	return col
}

// tableExists reports whether the sink's table exists.
func (s *DuckDB) tableExists(ctx context.Context) (bool, error) {
	_, name, _ := tableName(s.name)
	var n int
	err := s.conn.QueryRowContext(ctx, `SELECT count(*) FROM duckdb_tables()
		WHERE database_name = current_database() AND table_name = ?
		AND schema_name = coalesce(nullif(?, ''), current_schema()) AND NOT temporary`,
		name, s.schema).Scan(&n)
	return n > 0, err
}

// checkColumns compares an existing table with the wanted one. DuckDB
// itself normalises the wanted types: they are read back from a temporary
// table made with the same definitions.
func (s *DuckDB) checkColumns(ctx context.Context) error {
	_, name, _ := tableName(s.name)
	have, err := s.describe(ctx, "current_database()",
		"coalesce(nullif(?, ''), current_schema())", name, s.schema)
	if err != nil {
		return fmt.Errorf("check sink table %s: %w", s.name, err)
	}
	probe := "taskpipe_probe_" + randomHex(6)
	ddl := "CREATE TEMP TABLE " + specs.QuoteIdent(probe) + " (\n" + s.table.ColumnDefs() + "\n)"
	if _, err := s.conn.ExecContext(ctx, ddl); err != nil {
		return fmt.Errorf("check sink table %s: %w", s.name, err)
	}
	defer s.conn.ExecContext(context.WithoutCancel(ctx), "DROP TABLE temp.main."+specs.QuoteIdent(probe))
	want, err := s.describe(ctx, "'temp'", "'main'", probe, "")
	if err != nil {
		return fmt.Errorf("check sink table %s: %w", s.name, err)
	}
	if err := compareColumns(have, want); err != nil {
		return fmt.Errorf("sink table %s (drop it or name another table): %w", s.name, err)
	}
	return nil
}

// describedColumn is a column as DuckDB describes it.
type describedColumn struct{ name, typ string }

// describe lists the columns of a table in order.
func (s *DuckDB) describe(ctx context.Context, dbExpr, schemaExpr, table, schemaArg string) ([]describedColumn, error) {
	q := `SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = ` + dbExpr +
		` AND schema_name = ` + schemaExpr + ` AND table_name = ? ORDER BY column_index`
	args := []any{table}
	if strings.Contains(schemaExpr, "?") {
		args = []any{schemaArg, table}
	}
	rows, err := s.conn.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var cols []describedColumn
	for rows.Next() {
		var c describedColumn
		if err := rows.Scan(&c.name, &c.typ); err != nil {
			return nil, err
		}
		cols = append(cols, c)
	}
	return cols, rows.Err()
}

// compareColumns names every difference between an existing table's
// columns and the wanted ones.
func compareColumns(have, want []describedColumn) error {
	var problems []error
	haveByName := map[string]describedColumn{}
	for _, c := range have {
		haveByName[strings.ToLower(c.name)] = c
	}
	wantNames := map[string]bool{}
	for i, w := range want {
		wantNames[strings.ToLower(w.name)] = true
		h, ok := haveByName[strings.ToLower(w.name)]
		switch {
		case !ok:
			problems = append(problems, fmt.Errorf("column %s (%s) is missing", w.name, w.typ))
		case h.typ != w.typ:
			problems = append(problems, fmt.Errorf("column %s is %s, the task spec needs %s",
				w.name, h.typ, w.typ))
		case i >= len(have) || !strings.EqualFold(have[i].name, w.name):
			problems = append(problems, fmt.Errorf("column %s is not at position %d", w.name, i+1))
		}
	}
	for _, h := range have {
		if !wantNames[strings.ToLower(h.name)] {
			problems = append(problems, fmt.Errorf("column %s is not in the task spec", h.name))
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrColumnsDiffer, errors.Join(problems...))
}

// ErrColumnsDiffer is returned by Open when the sink's table or file exists
// with columns other than the task spec's output needs.
var ErrColumnsDiffer = errors.New("exists with other columns")

// Write upserts a batch in one transaction.
func (s *DuckDB) Write(ctx context.Context, rows []Row) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.released {
		if err := s.reopen(ctx); err != nil {
			return err
		}
	}
	err := s.write(ctx, rows)
	switch {
	case s.path == "" || s.idle <= 0:
	case s.maxHold > 0 && time.Since(s.heldSince) >= s.maxHold:
		if s.idleTimer != nil {
			s.idleTimer.Stop()
		}
		s.releaseLocked()
	case s.idleTimer == nil:
		s.idleTimer = time.AfterFunc(s.idle, s.release)
	default:
		s.idleTimer.Reset(s.idle)
	}
	return err
}

// reopen takes the released database file again for the next write, once
// it has been released for the gap and no other process holds it; what
// the sink knows of the keys it wrote survives.
func (s *DuckDB) reopen(ctx context.Context) error {
	if wait := s.gap - time.Since(s.releasedAt); wait > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
	db, err := OpenWhenFree(ctx, func() (*sql.DB, error) { return OpenDuckDB(s.path) },
		func(waited time.Duration) {
			if s.log != nil {
				s.log.Warn("sink waits for another process to close its database file",
					"file", s.path, "waited", waited.Round(time.Second))
			}
		})
	if err != nil {
		return fmt.Errorf("reopen sink table %s: %w", s.name, err)
	}
	written, seed := s.written, s.seed
	s.db, s.released, s.heldSince = db, false, time.Now()
	if err := s.Open(ctx, s.table); err != nil {
		return err
	}
	if written != nil {
		s.written, s.seed = written, seed
	}
	return nil
}

// release lets go of an idle database file so other processes can open it.
func (s *DuckDB) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releaseLocked()
}

// releaseLocked lets go of the database file; s.mu is held.
func (s *DuckDB) releaseLocked() {
	if s.released || s.conn == nil {
		return
	}
	if err := s.closeDB(context.Background()); err == nil {
		s.released, s.releasedAt = true, time.Now()
	}
}

// write upserts one batch on the open connection.
func (s *DuckDB) write(ctx context.Context, rows []Row) error {
	if s.conn == nil {
		return errors.New("write sink: not open")
	}
	if len(rows) == 0 {
		return nil
	}
	rows = latestRows(rows)

	// A batch of only new rows needs neither the DELETE nor the staging
	// table.
	if !s.mayReplace(rows) {
		return s.insertNew(ctx, rows)
	}

	// Stage the batch through the Appender.
	err := s.conn.Raw(func(dc any) error {
		conn, ok := dc.(driver.Conn)
		if !ok {
			return fmt.Errorf("unexpected driver connection %T", dc)
		}
		a, err := duckdb.NewAppender(conn, "temp", "main", s.stage)
		if err != nil {
			return err
		}
		if err := s.appendRows(a, rows); err != nil {
			return err
		}
		return a.Close()
	})
	if err != nil {
		s.clearStage(ctx)
		return fmt.Errorf("stage sink rows: %w", err)
	}

	// Replace the rows in one transaction.
	tx, err := s.conn.BeginTx(ctx, nil)
	if err != nil {
		s.clearStage(ctx)
		return fmt.Errorf("write sink rows: %w", err)
	}
	stmts := []string{s.delete, s.insert, "DELETE FROM temp.main." + specs.QuoteIdent(s.stage)}
	for _, stmt := range stmts {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			tx.Rollback()
			s.clearStage(ctx)
			return fmt.Errorf("write sink rows: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		s.clearStage(ctx)
		return fmt.Errorf("commit sink rows: %w", err)
	}
	return nil
}

// insertNew inserts a batch of rows that replace none in one transaction,
// through a query appender that runs the INSERT over the appended rows. The
// appender may run it more than once for a large batch; the transaction
// keeps the batch whole.
func (s *DuckDB) insertNew(ctx context.Context, rows []Row) error {
	tx, err := s.conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("write sink rows: %w", err)
	}
	err = s.conn.Raw(func(dc any) error {
		conn, ok := dc.(driver.Conn)
		if !ok {
			return fmt.Errorf("unexpected driver connection %T", dc)
		}
		// The staging table only lends its column types.
		a, err := duckdb.NewTableAppender(conn, s.insertAppended, "temp", "main", s.stage, nil)
		if err != nil {
			return err
		}
		if err := s.appendRows(a, rows); err != nil {
			return err
		}
		return a.CloseWithCancel(ctx)
	})
	if err != nil {
		tx.Rollback()
		return fmt.Errorf("write sink rows: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit sink rows: %w", err)
	}
	return nil
}

// appendRows appends rows to a; on an error it closes a, dropping them.
func (s *DuckDB) appendRows(a *duckdb.Appender, rows []Row) error {
	for _, r := range rows {
		if err := a.AppendRow(s.rowValues(r)...); err != nil {
			a.Close()
			return fmt.Errorf("append row %v: %w", r.Key, err)
		}
	}
	return nil
}

// mayReplace reports whether a batch may share a key or run_id with rows in
// the table, and records the batch's keys and run_ids as written.
func (s *DuckDB) mayReplace(rows []Row) bool {
	if s.written == nil {
		return true
	}
	hit := false
	for _, r := range rows {
		k := maphash.String(s.seed, "k\x00"+keyString(r.Key))
		if _, ok := s.written[k]; ok {
			hit = true
		}
		s.written[k] = struct{}{}
		if r.RunID != "" {
			h := maphash.String(s.seed, "r\x00"+r.RunID)
			if _, ok := s.written[h]; ok {
				hit = true
			}
			s.written[h] = struct{}{}
		}
	}
	return hit
}

// assumeRowsExist turns off the skipping of DELETEs, for a table filled
// behind the sink's back (the Parquet sink loading a published file).
func (s *DuckDB) assumeRowsExist() { s.written = nil }

// clearStage empties the staging table after a failed write.
func (s *DuckDB) clearStage(ctx context.Context) {
	_, _ = s.conn.ExecContext(context.WithoutCancel(ctx),
		"DELETE FROM temp.main."+specs.QuoteIdent(s.stage))
}

// rowValues converts a row into the values of the staging table's columns.
func (s *DuckDB) rowValues(r Row) []driver.Value {
	t := s.table
	vals := make([]driver.Value, 0, len(s.columns))
	for i, c := range t.Key {
		var v any
		if i < len(r.Key) {
			v = keyValue(c.Type, r.Key[i])
		}
		vals = append(vals, v)
	}
	status, errText := r.Status, r.Error
	outputs, err := r.OutputValues, error(nil)
	if outputs == nil {
		outputs, err = t.OutputValues(r.Output)
	}
	if err != nil {
		// One bad output fails its row, never the batch.
		outputs = make([]any, len(t.Output))
		status, errText = StatusFailed, err.Error()
	}
	vals = append(vals, nullString(r.RunID), status, nullString(errText), nullString(r.Processor))
	for _, o := range outputs {
		vals = append(vals, o)
	}
	return append(vals, basisJSON(r.Basis), nullTime(r.CreatedAt),
		nullTime(r.FinishedAt), nullString(r.InputFingerprint), nullString(r.SpecHash))
}

// jsonStructure renders t as the structure argument of DuckDB's from_json,
// which builds a value of type t from JSON text.
func jsonStructure(t specs.Type) string {
	switch t.Kind {
	case specs.KindList:
		elem := specs.JSONType
		if t.Elem != nil {
			elem = *t.Elem
		}
		return "[" + jsonStructure(elem) + "]"
	case specs.KindStruct:
		var sb strings.Builder
		sb.WriteString("{")
		for i, f := range t.Fields {
			if i > 0 {
				sb.WriteString(",")
			}
			name, _ := json.Marshal(f.Name)
			sb.Write(name)
			sb.WriteString(":")
			sb.WriteString(jsonStructure(f.Type))
		}
		sb.WriteString("}")
		return sb.String()
	}
	typ, _ := json.Marshal(t.DuckDB(false))
	return string(typ)
}

// basisJSON encodes a run's basis as the JSON text that is appended for
// the basis column, or NULL for none.
func basisJSON(basis []api.FieldBasis) any {
	if basis == nil {
		return nil
	}
	b, err := gojson.Marshal(basis)
	if err != nil {
		// Unreachable: the basis holds only strings, pointers to strings
		// and slices of them.
		return nil
	}
	return b
}

// keyValue converts a key value for its column. Source-typed columns are
// staged as text and cast by DuckDB.
func keyValue(t specs.Type, v any) any {
	if v == nil {
		return nil
	}
	if t.Kind == specs.KindSQL {
		switch x := v.(type) {
		case string:
			return x
		case []byte:
			return string(x)
		case time.Time:
			return x.Format(time.RFC3339Nano)
		case json.Number, int, int64, uint64, float64, bool:
			return fmt.Sprint(x)
		}
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Sprint(v)
		}
		return string(b)
	}
	if c, err := t.Convert("key", v); err == nil {
		return c
	}
	return v
}

// nullString maps "" to NULL.
func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// nullTime maps the zero time to NULL.
func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

// Close drops the staging table and releases the connection.
func (s *DuckDB) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.idleTimer != nil {
		s.idleTimer.Stop()
	}
	if s.released {
		s.released, s.ownDB = false, false
		return nil
	}
	err := s.closeDB(ctx)
	s.ownDB = false
	return err
}

// closeDB drops the staging table and closes the connection, and the
// database when the sink owns it.
func (s *DuckDB) closeDB(ctx context.Context) error {
	var errs []error
	if s.conn != nil {
		if s.stage != "" {
			_, err := s.conn.ExecContext(ctx, "DROP TABLE IF EXISTS temp.main."+specs.QuoteIdent(s.stage))
			errs = append(errs, err)
		}
		errs = append(errs, s.conn.Close())
		s.conn = nil
	}
	if s.ownDB {
		errs = append(errs, s.db.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close sink table %s: %w", s.name, err)
	}
	return nil
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
