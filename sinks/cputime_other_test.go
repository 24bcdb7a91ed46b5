//go:build !unix

package sinks_test

import "time"

// processCPU is not measured here; benchmarks then report 0 CPU per row.
func processCPU() time.Duration { return 0 }
