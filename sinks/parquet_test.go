package sinks_test

import (
	"path/filepath"
	"testing"

	"github.com/taskpipe/taskpipe/sinks"
)

// BenchmarkParquet_Write measures the Parquet sink on the rows of
// BenchmarkDuckDB_Write, publishing the file at the end.
func BenchmarkParquet_Write(b *testing.B) {
	benchmarkSink(b, func(dir string) sinks.Sink {
		return sinks.NewParquet(filepath.Join(dir, "bench.parquet"))
	})
}
