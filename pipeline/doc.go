// Package pipeline runs the rows of a source through a task group into a
// sink: each row is mapped onto the task's input, validated, added as a run
// (in chunks, within a rate limit), and its typed output is written back as
// soon as the run finishes. A local state store makes a re-run resume where
// the last one stopped without paying for any completed run twice.
//
// The package declares what it consumes: Source (sources/) and the sink of
// package sinks; task groups are reached through api.TaskGroups, which both
// the in-process engine and the HTTP client implement.
package pipeline
