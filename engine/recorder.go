package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	gojson "github.com/goccy/go-json"
	"github.com/google/uuid"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/store"
)

// Retry and batching constants.
const (
	recordBatch    = 2000
	backoffBase    = time.Second
	backoffCap     = 5 * time.Minute
	commitAttempts = 5
)

// errCancelled is the outcome the engine gives a running run it cancels.
var errCancelled = errors.New("run cancelled")

// decision is what the recorder will write for one outcome.
type decision struct {
	finish *store.Finish
	retry  *store.Retry
	d      *dispatcher
	took   time.Duration
}

// recorder turns outcomes into store writes. Outcomes are queued and
// committed in batches, one transaction per batch, so that thousands of
// completions per second cost a few commits.
type recorder struct {
	e      *Engine
	in     chan decision
	quit   chan struct{}
	exited chan struct{}
	once   sync.Once
}

func newRecorder(e *Engine) *recorder {
	return &recorder{
		e:      e,
		in:     make(chan decision, 4*recordBatch),
		quit:   make(chan struct{}),
		exited: make(chan struct{}),
	}
}

func (rc *recorder) start(wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(rc.exited)
		rc.loop()
	}()
}

// stop makes the loop write what is queued and exit.
func (rc *recorder) stop() {
	rc.once.Do(func() { close(rc.quit) })
}

// complete decides what an outcome means for the run (finish, retry) and
// queues the write. Outcomes for runs no longer in flight are ignored.
func (rc *recorder) complete(d *dispatcher, runID string, o Outcome) {
	j, ok := d.take(runID)
	if !ok {
		return
	}
	now := rc.e.now()
	dec := decision{d: d, took: now.Sub(j.started)}
	r := &j.run

	switch {
	case errors.Is(o.Err, errCancelled):
		dec.finish = rc.finish(r, api.StatusCancelled, nil, errorJSON("run cancelled"), o, now)

	case o.Err != nil:
		transient, wait := IsTransient(o.Err)
		if transient && r.Attempt < d.backend.MaxAttempts {
			dec.retry = rc.retry(r, o.Err, wait, now)
		} else {
			msg := o.Err.Error()
			if transient {
				msg = fmt.Sprintf("%s (gave up after %d attempts)", msg, r.Attempt)
			}
			dec.finish = rc.finish(r, api.StatusFailed, nil, errorJSON(msg), o, now)
		}

	default:
		err := rc.e.checkOutput(j.spec, o.Output)
		if err != nil && r.Attempt < 2 && r.Attempt < d.backend.MaxAttempts {
			// Invalid output gets one more attempt.
			dec.retry = rc.retry(r, err, 0, now)
			break
		}
		if err != nil {
			dec.finish = rc.finish(r, api.StatusFailed, nil, errorJSON(err.Error()), o, now)
			break
		}
		out, merr := gojson.Marshal(o.Output)
		if merr != nil {
			dec.finish = rc.finish(r, api.StatusFailed, nil, errorJSON("encode output: "+merr.Error()), o, now)
			break
		}
		dec.finish = rc.finish(r, api.StatusCompleted, out, nil, o, now)
	}

	select {
	case rc.in <- dec:
	case <-rc.exited:
		// Stopped: the run stays leased and runs again after a restart.
	}
}

func (rc *recorder) finish(r *store.Run, status api.RunStatus, out, errJSON json.RawMessage, o Outcome, now time.Time) *store.Finish {
	f := &store.Finish{
		RunID:  r.ID,
		Node:   rc.e.node,
		Status: status,
		Output: out,
		Error:  errJSON,
		Cached: o.Cached,
		At:     now,
	}
	if o.Usage != nil {
		f.Usage, _ = json.Marshal(o.Usage)
	}
	f.Webhook = rc.e.webhooks.delivery(r, status, errJSON, now)
	return f
}

func (rc *recorder) retry(r *store.Run, cause error, wait time.Duration, now time.Time) *store.Retry {
	return &store.Retry{
		RunID:     r.ID,
		Node:      rc.e.node,
		NotBefore: now.Add(max(wait, backoff(r.Attempt))),
		Error:     errorJSON(cause.Error()),
		At:        now,
	}
}

// backoff is the wait before attempt+1: exponential from one second, capped,
// with jitter so that retries of a batch spread out.
func backoff(attempt int) time.Duration {
	d := backoffBase << min(max(attempt-1, 0), 16)
	d = min(d, backoffCap)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// errorJSON encodes an ErrorObject with a fresh ref_id.
func errorJSON(msg string) json.RawMessage {
	b, _ := json.Marshal(api.ErrorObject{RefID: uuid.NewString(), Message: msg})
	return b
}

// loop commits queued decisions in batches until stopped.
func (rc *recorder) loop() {
	for {
		select {
		case first := <-rc.in:
			rc.commit(rc.fill([]decision{first}))
		case <-rc.quit:
			rc.flush()
			return
		}
	}
}

// fill adds to batch what is queued, up to recordBatch, without waiting.
func (rc *recorder) fill(batch []decision) []decision {
	for len(batch) < recordBatch {
		select {
		case dec := <-rc.in:
			batch = append(batch, dec)
		default:
			return batch
		}
	}
	return batch
}

// flush commits whatever is still queued.
func (rc *recorder) flush() {
	for batch := rc.fill(nil); len(batch) > 0; batch = rc.fill(nil) {
		rc.commit(batch)
	}
}

// commit writes one batch, retrying the store a few times. If it still
// fails the runs stay leased and are executed again after recovery.
func (rc *recorder) commit(batch []decision) {
	var finishes []store.Finish
	var retries []store.Retry
	for _, dec := range batch {
		if dec.finish != nil {
			finishes = append(finishes, *dec.finish)
			rc.e.metrics.observe(dec.d.name, dec.finish.Status, dec.took)
		}
		if dec.retry != nil {
			retries = append(retries, *dec.retry)
			rc.e.metrics.observe(dec.d.name, "retried", dec.took)
		}
	}
	ctx := context.Background()
	for attempt := 1; ; attempt++ {
		err := rc.write(ctx, finishes, retries)
		if err == nil {
			return
		}
		if attempt == commitAttempts {
			rc.e.log.Error("record run outcomes; runs will execute again after recovery",
				"runs", len(batch), "error", err)
			return
		}
		time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
	}
}

func (rc *recorder) write(ctx context.Context, finishes []store.Finish, retries []store.Retry) error {
	if len(retries) > 0 {
		if err := rc.e.store.RetryRuns(ctx, retries); err != nil {
			return fmt.Errorf("requeue runs: %w", err)
		}
		rc.e.wakeAll()
	}
	if len(finishes) > 0 {
		res, err := rc.e.store.FinishRuns(ctx, finishes)
		if err != nil {
			return fmt.Errorf("finish runs: %w", err)
		}
		rc.e.afterFinish(res)
	}
	return nil
}

// afterFinish tells everyone who waits on the runs a commit changed.
func (e *Engine) afterFinish(res store.FinishResult) {
	e.hub.publish(res.Events)
	ids := make([]string, 0, len(res.Applied))
	hasWebhook := false
	for i := range res.Applied {
		r := &res.Applied[i]
		ids = append(ids, r.ID)
		if r.Status.Terminal() {
			e.progress.forget(r.ID)
		}
		if !hasWebhook && bytes.Contains(r.Input, []byte(`"webhook"`)) {
			hasWebhook = true
		}
	}
	e.hub.runChanged(ids...)
	if hasWebhook {
		e.webhooks.wake()
	}
}
