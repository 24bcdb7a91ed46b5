package bench_test

import (
	"context"
	"testing"

	"github.com/taskpipe/taskpipe/bench"
)

func TestPipelineFixture_BaselineCopiesEveryRow(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	fx, err := bench.WritePipelineFixture(ctx, dir, 1234)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bench.DuckDBCopy(ctx, fx.Parquet, dir+"/copy.duckdb"); err != nil {
		t.Fatal(err)
	}
	db := dir + "/copy.duckdb"
	counts, err := bench.CountByStatus(ctx, db, "(SELECT 'copied' AS status FROM copied)")
	if err != nil {
		t.Fatal(err)
	}
	if counts["copied"] != 1234 {
		t.Fatalf("copied rows = %v, want 1234", counts)
	}
}
