// Package engine runs task groups: it accepts runs, keeps their state in a
// store.Store, schedules them onto processors within each processor's
// concurrency and rate limits, retries transient failures, validates
// outputs, appends the group event log and fans events out to subscribers.
//
// The engine implements api.TaskGroups and api.TaskRuns, so code written
// against those interfaces runs unchanged in-process or against a remote
// server through api.Client. Calls act on behalf of the owner carried in the
// context (WithOwner); groups and runs of another owner are not found.
package engine

import (
	"context"
	"time"
)

// Backend is a configured processor: the implementation and the limits the
// engine enforces around it.
type Backend struct {
	Processor Processor
	// Concurrency is the most runs executing at once (default 16).
	Concurrency int
	// RatePerMinute caps how many runs start per minute (0: no cap).
	RatePerMinute float64
	// Timeout is the per-run deadline of one attempt (default 10 min).
	Timeout time.Duration
	// MaxAttempts bounds executions of a run on transient errors
	// (default 3).
	MaxAttempts int
	// PricePerRun is the cost of one run in US dollars, for budgets.
	PricePerRun float64
}

type ownerKey struct{}

// WithOwner returns a context whose calls act on behalf of owner (an API
// key's identity). The empty owner is the embedded default.
func WithOwner(ctx context.Context, owner string) context.Context {
	return context.WithValue(ctx, ownerKey{}, owner)
}

// OwnerFrom returns the owner carried by ctx.
func OwnerFrom(ctx context.Context) string {
	o, _ := ctx.Value(ownerKey{}).(string)
	return o
}
