//go:build unix

package sinks_test

import (
	"syscall"
	"time"
)

// processCPU returns the user and system CPU time this process has used,
// so that benchmarks can report CPU per row beside wall time (DuckDB runs
// part of a write on threads of its own).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
