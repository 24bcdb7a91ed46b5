// Package sinktest is the suite every sink must pass: typed columns and
// every shape of basis round trip, rows are upserted by key and by run_id,
// invalid_input rows are kept, a batch that fails writes none of its rows,
// large batches work and a reopened sink keeps its rows.
package sinktest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/sinks"
	"github.com/taskpipe/taskpipe/specs"
)

// Suite describes the sink under test.
type Suite struct {
	// New returns a sink that keeps its table under dir, and a function
	// that reads every row of that table the way another reader would
	// (column name -> value as database/sql scans it from DuckDB). Calling
	// New again with the same dir reopens the same table.
	New func(t *testing.T, dir string) (sinks.Sink, func() []map[string]any)
	// LiveRows says rows can be read as soon as Write returns; otherwise
	// they are read after Close.
	LiveRows bool
}

// OutputSchema is the output schema of the suite's table: every type the
// column mapping knows.
const OutputSchema = `{"type":"object","additionalProperties":false,
 "required":["employees","revenue","public","segments","hq","tier","officers","extra","margin"],
 "properties":{
  "employees":{"type":"integer"},
  "revenue":{"type":"number"},
  "public":{"type":"boolean"},
  "segments":{"type":"array","items":{"type":"string"}},
  "hq":{"type":"object","additionalProperties":false,"required":["city","founded"],
        "properties":{"city":{"type":"string"},"founded":{"type":"integer"}}},
  "tier":{"type":"string","enum":["small","large"]},
  "officers":{"type":"array","items":{"type":"object","additionalProperties":false,
        "required":["name","since"],"properties":{"name":{"type":"string"},"since":{"type":["integer","null"]}}}},
  "extra":{"type":["string","integer"]},
  "margin":{"type":["number","null"]}}}`

// Table returns the suite's table: key (symbol VARCHAR, listed DATE).
func Table(t *testing.T) specs.Table {
	t.Helper()
	tbl, err := specs.NewTable(
		[]specs.Column{{Name: "symbol", Type: specs.Varchar}, {Name: "listed", Type: specs.SQLType("DATE")}},
		api.Schema{Type: api.SchemaJSON, JSONSchema: json.RawMessage(OutputSchema)})
	if err != nil {
		t.Fatalf("build table: %v", err)
	}
	return tbl
}

var (
	created  = time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	finished = time.Date(2026, 5, 1, 10, 0, 30, 500000000, time.UTC)
)

// completed returns a completed row for symbol with the given headcount.
func completed(symbol, runID string, employees int) sinks.Row {
	high := "high"
	title := "Annual report"
	return sinks.Row{
		Key:   []any{symbol, "2001-02-03"},
		RunID: runID, Status: "completed", Processor: "lite",
		Output: json.RawMessage(fmt.Sprintf(`{"employees":%d,"revenue":1.5e9,"public":true,
			"segments":["cloud","ads"],"hq":{"city":"Oslo","founded":1999},"tier":"large",
			"officers":[{"name":"Ada","since":2010},{"name":"Bo","since":null}],
			"extra":7,"margin":null}`, employees)),
		Basis: []api.FieldBasis{{Field: "employees", Reasoning: "from the 10-K", Confidence: &high,
			Citations: []api.Citation{{URL: "https://example.com/10k", Title: &title,
				Excerpts: []string{"we employ"}}}}},
		CreatedAt: created, FinishedAt: finished,
		InputFingerprint: "fp-" + symbol, SpecHash: "spec1",
	}
}

// Run runs the suite.
func Run(t *testing.T, s Suite) {
	t.Run("TypesRoundTrip", func(t *testing.T) { testTypes(t, s) })
	t.Run("BasisRoundTrip", func(t *testing.T) { testBasis(t, s) })
	t.Run("UpsertByKey", func(t *testing.T) { testUpsertByKey(t, s) })
	t.Run("UpsertByRunID", func(t *testing.T) { testUpsertByRunID(t, s) })
	t.Run("InvalidInputRows", func(t *testing.T) { testInvalidInput(t, s) })
	t.Run("BadOutputFailsItsRowOnly", func(t *testing.T) { testBadOutput(t, s) })
	t.Run("FailedBatchWritesNothing", func(t *testing.T) { testFailedBatch(t, s) })
	t.Run("LargeBatch", func(t *testing.T) { testLargeBatch(t, s) })
	t.Run("Reopen", func(t *testing.T) { testReopen(t, s) })
	t.Run("IncompatibleTable", func(t *testing.T) { testIncompatible(t, s) })
}

// session opens a sink in dir on the suite table.
type session struct {
	t    *testing.T
	s    Suite
	sink sinks.Sink
	read func() []map[string]any
}

func open(t *testing.T, s Suite, dir string, tbl specs.Table) *session {
	t.Helper()
	sink, read := s.New(t, dir)
	if err := sink.Open(context.Background(), tbl); err != nil {
		t.Fatalf("Open: %v", err)
	}
	return &session{t: t, s: s, sink: sink, read: read}
}

func (ss *session) write(rows ...sinks.Row) {
	ss.t.Helper()
	if err := ss.sink.Write(context.Background(), rows); err != nil {
		ss.t.Fatalf("Write: %v", err)
	}
}

// rows returns the table's rows sorted by symbol, closing the sink first
// when rows are only visible after Close.
func (ss *session) rows() []map[string]any {
	ss.t.Helper()
	if !ss.s.LiveRows {
		ss.close()
	}
	rows := ss.read()
	sort.Slice(rows, func(i, j int) bool {
		return fmt.Sprint(rows[i]["symbol"]) < fmt.Sprint(rows[j]["symbol"])
	})
	return rows
}

func (ss *session) close() {
	ss.t.Helper()
	if ss.sink == nil {
		return
	}
	if err := ss.sink.Close(context.Background()); err != nil {
		ss.t.Fatalf("Close: %v", err)
	}
	ss.sink = nil
}

func testTypes(t *testing.T, s Suite) {
	ss := open(t, s, t.TempDir(), Table(t))
	defer ss.close()
	nulls := sinks.Row{Key: []any{"NUL", nil}, RunID: "run_n", Status: "completed",
		Output: json.RawMessage(`{"employees":null,"revenue":null,"public":null,"segments":null,
			"hq":null,"tier":null,"officers":[],"extra":{"a":["x"]},"margin":2}`)}
	ss.write(completed("ACME", "run_a", 12000), nulls)
	rows := ss.rows()
	if len(rows) != 2 {
		t.Fatalf("rows = %d, want 2: %v", len(rows), rows)
	}
	a, n := rows[0], rows[1]
	want := map[string]any{
		"symbol": "ACME", "run_id": "run_a", "status": "completed", "error": nil,
		"processor": "lite", "employees": int64(12000), "revenue": 1.5e9, "public": true,
		"segments": []any{"cloud", "ads"},
		"hq":       map[string]any{"city": "Oslo", "founded": int64(1999)},
		"tier":     "large",
		"officers": []any{map[string]any{"name": "Ada", "since": int64(2010)},
			map[string]any{"name": "Bo", "since": nil}},
		"margin": nil, "input_fingerprint": "fp-ACME", "spec_hash": "spec1",
	}
	for col, w := range want {
		if !reflect.DeepEqual(a[col], w) {
			t.Errorf("%s = %#v (%T), want %#v", col, a[col], a[col], w)
		}
	}
	if got := fmt.Sprint(a["listed"]); !strings.HasPrefix(got, "2001-02-03") {
		t.Errorf("listed = %v, want the date 2001-02-03", a["listed"])
	}
	// JSON columns stay JSON (the reader decodes them), never a string
	// holding encoded JSON.
	if a["extra"] != 7.0 {
		t.Errorf("extra (JSON) = %#v, want the number 7", a["extra"])
	}
	checkTime(t, "created_at", a["created_at"], created)
	checkTime(t, "finished_at", a["finished_at"], finished)
	for _, col := range []string{"employees", "revenue", "public", "segments", "hq", "tier",
		"processor", "created_at", "listed"} {
		if n[col] != nil {
			t.Errorf("null row: %s = %#v, want NULL", col, n[col])
		}
	}
	if !reflect.DeepEqual(n["officers"], []any{}) {
		t.Errorf("null row: officers = %#v, want an empty list", n["officers"])
	}
	if n["margin"] != 2.0 || !reflect.DeepEqual(n["extra"], map[string]any{"a": []any{"x"}}) {
		t.Errorf("null row: margin, extra = %#v, %#v", n["margin"], n["extra"])
	}

	// The basis column holds the full basis.
	wantBasis := []any{map[string]any{"field": "employees", "reasoning": "from the 10-K",
		"confidence": "high", "citations": []any{map[string]any{"url": "https://example.com/10k",
			"title": "Annual report", "excerpts": []any{"we employ"}}}}}
	if !reflect.DeepEqual(a["basis"], wantBasis) {
		t.Errorf("basis = %#v\nwant %#v", a["basis"], wantBasis)
	}
	if n["basis"] != nil {
		t.Errorf("basis of a row without one = %#v, want NULL", n["basis"])
	}
}

// testBasis writes bases of every shape (none, empty, null fields, empty
// and null lists, text that JSON must escape) and reads each back exactly.
func testBasis(t *testing.T, s Suite) {
	ss := open(t, s, t.TempDir(), Table(t))
	defer ss.close()
	str := func(v string) *string { return &v }
	tricky := "quote \" \\ back\\slash \u00e9t\u00e9 \u6771\u4eac \U0001F600 <a href='x'>&amp;</a>" +
		"\n\ttab \x01 \x00 nul \u2028 end"
	bases := map[string][]api.FieldBasis{
		"A_NONE":  nil,
		"B_EMPTY": {},
		"C_NULLS": {{Field: "employees"}},
		"D_LISTS": {
			{Field: "revenue", Reasoning: "r", Confidence: str("low"), Citations: []api.Citation{}},
			{Field: "hq.city", Reasoning: "", Citations: []api.Citation{
				{URL: "https://a.example/x?q=1&r=2"},
				{URL: "u", Title: str(""), Excerpts: []string{}},
				{URL: "v", Title: str("T"), Excerpts: []string{"one", "", tricky}}}}},
		"E_TEXT": {{Field: tricky, Reasoning: tricky, Confidence: str(tricky),
			Citations: []api.Citation{{URL: tricky, Title: str(tricky), Excerpts: []string{tricky}}}}},
	}
	var rows []sinks.Row
	for symbol, basis := range bases {
		r := completed(symbol, "run_"+symbol, 1)
		r.Basis = basis
		rows = append(rows, r)
	}
	ss.write(rows...)

	want := map[string]any{
		"A_NONE":  nil,
		"B_EMPTY": []any{},
		"C_NULLS": []any{map[string]any{"field": "employees", "reasoning": "",
			"confidence": nil, "citations": nil}},
		"D_LISTS": []any{
			map[string]any{"field": "revenue", "reasoning": "r", "confidence": "low",
				"citations": []any{}},
			map[string]any{"field": "hq.city", "reasoning": "", "confidence": nil,
				"citations": []any{
					map[string]any{"url": "https://a.example/x?q=1&r=2", "title": nil,
						"excerpts": nil},
					map[string]any{"url": "u", "title": "", "excerpts": []any{}},
					map[string]any{"url": "v", "title": "T",
						"excerpts": []any{"one", "", tricky}}}}},
		"E_TEXT": []any{map[string]any{"field": tricky, "reasoning": tricky,
			"confidence": tricky, "citations": []any{map[string]any{"url": tricky,
				"title": tricky, "excerpts": []any{tricky}}}}},
	}
	got := ss.rows()
	if len(got) != len(want) {
		t.Fatalf("rows = %d, want %d", len(got), len(want))
	}
	for _, r := range got {
		symbol := fmt.Sprint(r["symbol"])
		if !reflect.DeepEqual(r["basis"], want[symbol]) {
			t.Errorf("%s: basis = %#v\nwant %#v", symbol, r["basis"], want[symbol])
		}
	}
}

// testFailedBatch writes a batch whose last row DuckDB cannot store (a key
// that is not a DATE) into an empty table and into one with rows: Write
// fails, no row of the batch is kept, and the sink goes on writing.
func testFailedBatch(t *testing.T, s Suite) {
	ss := open(t, s, t.TempDir(), Table(t))
	defer ss.close()
	bad := completed("BAD", "run_bad", 0)
	bad.Key = []any{"BAD", "not a date"}
	for _, batch := range [][]sinks.Row{
		{completed("A", "run_a", 1), completed("B", "run_b", 2), bad},
		{completed("A", "run_a2", 3), completed("C", "run_c", 4), bad},
	} {
		if err := ss.sink.Write(context.Background(), batch); err == nil {
			t.Fatalf("Write accepted a row keyed %v", bad.Key)
		}
		ss.write(completed("Z", "run_z", 9))
		if !ss.s.LiveRows {
			break // rows are only read after Close
		}
		if got, want := summary(ss.read()), "Z/run_z/9"; got != want {
			t.Fatalf("rows after a failed batch = %s, want %s", got, want)
		}
	}
	if got, want := summary(ss.rows()), "Z/run_z/9"; got != want {
		t.Errorf("rows after a failed batch = %s, want %s", got, want)
	}
}

func checkTime(t *testing.T, col string, got any, want time.Time) {
	t.Helper()
	tm, ok := got.(time.Time)
	if !ok || !tm.Equal(want) {
		t.Errorf("%s = %#v, want %v", col, got, want)
	}
}

func testUpsertByKey(t *testing.T, s Suite) {
	ss := open(t, s, t.TempDir(), Table(t))
	defer ss.close()
	ss.write(completed("A", "run_1", 1), completed("B", "run_2", 2))
	// A later batch replaces A; within a batch the last row of a key wins.
	ss.write(completed("A", "run_3", 3), completed("C", "run_4", 4), completed("C", "run_5", 5))
	rows := ss.rows()
	got := summary(rows)
	want := "A/run_3/3 B/run_2/2 C/run_5/5"
	if got != want {
		t.Errorf("rows = %s, want %s", got, want)
	}
}

func testUpsertByRunID(t *testing.T, s Suite) {
	ss := open(t, s, t.TempDir(), Table(t))
	defer ss.close()
	ss.write(completed("A", "run_1", 1))
	ss.write(completed("B", "run_1", 2))
	if got, want := summary(ss.rows()), "B/run_1/2"; got != want {
		t.Errorf("rows = %s, want %s", got, want)
	}
}

func testInvalidInput(t *testing.T, s Suite) {
	ss := open(t, s, t.TempDir(), Table(t))
	defer ss.close()
	invalid := func(symbol, msg string) sinks.Row {
		return sinks.Row{Key: []any{symbol, "2001-02-03"}, Status: specs.StatusInvalidInput,
			Error: msg, InputFingerprint: "fp-" + symbol, SpecHash: "spec1"}
	}
	ss.write(invalid("X", "mapping.name: column is null"), invalid("Y", "first"))
	ss.write(invalid("Y", "second"), completed("X", "run_9", 9))
	rows := ss.rows()
	if got, want := summary(rows), "X/run_9/9 Y/<nil>/<nil>"; got != want {
		t.Fatalf("rows = %s, want %s", got, want)
	}
	y := rows[1]
	if y["status"] != specs.StatusInvalidInput || y["error"] != "second" || y["run_id"] != nil {
		t.Errorf("invalid row = status %v error %v run_id %v", y["status"], y["error"], y["run_id"])
	}
}

func testBadOutput(t *testing.T, s Suite) {
	ss := open(t, s, t.TempDir(), Table(t))
	defer ss.close()
	bad := completed("BAD", "run_b", 0)
	bad.Output = json.RawMessage(`{"employees":2.5}`)
	ss.write(completed("GOOD", "run_g", 5), bad)
	rows := ss.rows()
	if got, want := summary(rows), "BAD/run_b/<nil> GOOD/run_g/5"; got != want {
		t.Fatalf("rows = %s, want %s", got, want)
	}
	errText, _ := rows[0]["error"].(string)
	if rows[0]["status"] != sinks.StatusFailed || !strings.Contains(errText, "employees: 2.5 is not an integer") {
		t.Errorf("bad row: status %v, error %q", rows[0]["status"], errText)
	}
}

func testLargeBatch(t *testing.T, s Suite) {
	ss := open(t, s, t.TempDir(), Table(t))
	defer ss.close()
	const n = 50000
	rows := make([]sinks.Row, n)
	for i := range rows {
		rows[i] = completed(fmt.Sprintf("S%06d", i), fmt.Sprintf("run_%d", i), i)
	}
	ss.write(rows...)
	ss.write(completed("S000007", "run_x", -7))
	got := ss.rows()
	if len(got) != n {
		t.Fatalf("rows = %d, want %d", len(got), n)
	}
	for _, i := range []int{0, 7, n - 1} {
		want := int64(i)
		if i == 7 {
			want = -7
		}
		if got[i]["symbol"] != fmt.Sprintf("S%06d", i) || got[i]["employees"] != want {
			t.Errorf("row %d = %v/%v, want employees %d", i, got[i]["symbol"], got[i]["employees"], want)
		}
	}
}

func testReopen(t *testing.T, s Suite) {
	dir := t.TempDir()
	ss := open(t, s, dir, Table(t))
	ss.write(completed("A", "run_1", 1), completed("B", "run_2", 2))
	ss.close()

	ss = open(t, s, dir, Table(t))
	defer ss.close()
	if got, want := summary(ss.read()), "A/run_1/1 B/run_2/2"; got != want && s.LiveRows {
		t.Errorf("reopened rows = %s, want %s", got, want)
	}
	ss.write(completed("B", "run_3", 3), completed("C", "run_4", 4))
	if got, want := summary(ss.rows()), "A/run_1/1 B/run_3/3 C/run_4/4"; got != want {
		t.Errorf("rows after resume = %s, want %s", got, want)
	}
}

func testIncompatible(t *testing.T, s Suite) {
	dir := t.TempDir()
	ss := open(t, s, dir, Table(t))
	ss.write(completed("A", "run_1", 1))
	ss.close()

	other, err := specs.NewTable(
		[]specs.Column{{Name: "symbol", Type: specs.Varchar}, {Name: "listed", Type: specs.SQLType("DATE")}},
		api.Schema{Type: api.SchemaJSON, JSONSchema: json.RawMessage(
			strings.Replace(OutputSchema, `"employees":{"type":"integer"}`, `"employees":{"type":"string"}`, 1))})
	if err != nil {
		t.Fatal(err)
	}
	// Refused every time, and closing the refused sink loses nothing.
	for attempt := 1; attempt <= 2; attempt++ {
		sink, _ := s.New(t, dir)
		err = sink.Open(context.Background(), other)
		if err == nil {
			sink.Close(context.Background())
			t.Fatalf("attempt %d: Open accepted a table whose employees column changed type", attempt)
		}
		if !errors.Is(err, sinks.ErrColumnsDiffer) || !strings.Contains(err.Error(), "employees") {
			t.Errorf("attempt %d: error is not ErrColumnsDiffer naming the column: %v", attempt, err)
		}
		if err := sink.Close(context.Background()); err != nil {
			t.Fatalf("attempt %d: Close after a refused Open: %v", attempt, err)
		}
	}
	ss = open(t, s, dir, Table(t))
	defer ss.close()
	if got, want := summary(ss.rows()), "A/run_1/1"; got != want {
		t.Errorf("rows after refused opens = %s, want %s", got, want)
	}
}

// summary renders rows as symbol/run_id/employees, space-separated.
func summary(rows []map[string]any) string {
	sort.Slice(rows, func(i, j int) bool {
		return fmt.Sprint(rows[i]["symbol"]) < fmt.Sprint(rows[j]["symbol"])
	})
	var parts []string
	for _, r := range rows {
		parts = append(parts, fmt.Sprintf("%v/%v/%v", r["symbol"], r["run_id"], r["employees"]))
	}
	return strings.Join(parts, " ")
}
