package processors

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/engine"
)

// ExecOptions configures the exec kind: a user's local program, kept
// running, that answers one JSON line on stdout for each JSON line request
// on stdin.
type ExecOptions struct {
	// Command is the program and its arguments.
	Command []string `yaml:"command"`
	// Dir is the working directory (default: taskpipe's).
	Dir string `yaml:"dir"`
	// Env adds variables to the program's environment; values may
	// reference taskpipe's environment as $NAME or ${NAME}.
	Env map[string]string `yaml:"env"`
	// MaxInFlight is the most requests written and not yet answered
	// (default 64).
	MaxInFlight int `yaml:"max_in_flight"`
	// RestartBackoff is the first wait before restarting a program that
	// exited, doubled on each further exit without a reply in between, up
	// to 30s (default 500ms).
	RestartBackoff time.Duration `yaml:"restart_backoff"`
	// FailOnCrash makes the runs a crashed program held fail for good;
	// by default they fail as transient, so the engine retries them.
	FailOnCrash bool `yaml:"fail_on_crash"`
}

// execRequest is one request line.
type execRequest struct {
	ID           string          `json:"id"`
	RunID        string          `json:"run_id"`
	Input        json.RawMessage `json:"input"`
	OutputSchema *api.Schema     `json:"output_schema"`
}

// execReply is one reply line: an output or an error for a request id.
type execReply struct {
	ID *string `json:"id"`
	httpReply
}

// Exec is the processor of the exec kind. Requests
// {"id","run_id","input","output_schema"} go to the program's stdin, one
// per line; it answers {"id","output"} or {"id","error"} lines on stdout in
// any order. When the program exits, the runs it held fail with its recent
// stderr in the error (as transient unless fail_on_crash) and it is
// restarted with backoff. Lines that are not replies are logged and
// skipped.
type Exec struct {
	opts ExecOptions
	env  []string
	log  *slog.Logger
	// slots bounds the requests in flight.
	slots chan struct{}
	// wake tells the dispatcher that the queue has work.
	wake    chan struct{}
	closing chan struct{} // closed by Close
	done    chan struct{} // closed when the dispatcher has stopped

	mu     sync.Mutex
	queue  []*execPending
	closed bool
	child  *execChild
	nextID uint64
	// failures counts program exits since the last reply, for backoff.
	failures int
}

var (
	_ engine.Processor = (*Exec)(nil)
	_ engine.Closer    = (*Exec)(nil)
)

// execPending is a run waiting for its reply.
type execPending struct {
	ctx   context.Context
	job   engine.Job
	r     engine.Reporter
	slots chan struct{} // the in-flight slot it holds once sent
	id    string        // request id, once sent
	timer *time.Timer   // fires at the run's deadline
}

// stderrLines is how many recent stderr lines a crash error quotes.
const stderrLines = 20

// NewExec checks the options and starts the dispatcher; the program itself
// starts with the first request.
func NewExec(opts ExecOptions, log *slog.Logger) (*Exec, error) {
	// Validate and default the options.
	var errs []error
	if len(opts.Command) == 0 || opts.Command[0] == "" {
		errs = append(errs, errors.New("command: must name a program"))
	} else if _, err := exec.LookPath(opts.Command[0]); err != nil && opts.Dir == "" {
		errs = append(errs, fmt.Errorf("command: %w", err))
	}
	if opts.MaxInFlight < 0 {
		errs = append(errs, errors.New("max_in_flight: must be > 0"))
	}
	if opts.RestartBackoff < 0 {
		errs = append(errs, errors.New("restart_backoff: must be >= 0"))
	}
	env := os.Environ()
	for k, v := range opts.Env {
		expanded := os.Expand(v, func(name string) string {
			val, ok := os.LookupEnv(name)
			if !ok {
				errs = append(errs, fmt.Errorf("env.%s: environment variable %s is not set", k, name))
			}
			return val
		})
		env = append(env, k+"="+expanded)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if opts.MaxInFlight == 0 {
		opts.MaxInFlight = 64
	}
	if opts.RestartBackoff == 0 {
		opts.RestartBackoff = 500 * time.Millisecond
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Exec{
		opts:    opts,
		env:     env,
		log:     log,
		slots:   make(chan struct{}, opts.MaxInFlight),
		wake:    make(chan struct{}, 1),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
	go e.dispatch()
	return e, nil
}

// newExecKind is the Factory of the exec kind.
func newExecKind(options yaml.Node, log *slog.Logger) (engine.Processor, error) {
	var o ExecOptions
	if err := DecodeOptions(options, &o); err != nil {
		return nil, err
	}
	return NewExec(o, log)
}

// Execute queues the jobs for the dispatcher.
func (e *Exec) Execute(ctx context.Context, jobs []engine.Job, r engine.Reporter) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		for _, j := range jobs {
			r.Complete(j.RunID, engine.Outcome{
				Err: engine.Transient(errors.New("exec processor is closed"), 0)})
		}
		return
	}
	for _, j := range jobs {
		e.queue = append(e.queue, &execPending{ctx: ctx, job: j, r: r, slots: e.slots})
	}
	e.mu.Unlock()
	e.signal()
}

// signal wakes the dispatcher without blocking.
func (e *Exec) signal() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Close stops the program: its stdin is closed, and it is killed if it has
// not exited within 5 seconds. Runs still queued or in flight are
// abandoned, for the engine to run again.
func (e *Exec) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.mu.Unlock()
	close(e.closing)
	<-e.done
	e.mu.Lock()
	c := e.child
	e.mu.Unlock()
	if c != nil {
		c.stop(5 * time.Second)
	}
	return nil
}

// dispatch writes queued requests to the program, one at a time, within
// the in-flight limit, starting the program when it is not running.
func (e *Exec) dispatch() {
	defer close(e.done)
	for {
		// Take the next queued run, or wait for one.
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			return
		}
		if len(e.queue) == 0 {
			e.mu.Unlock()
			c := e.current()
			if c != nil {
				c.flush()
			}
			select {
			case <-e.wake:
			case <-e.closing:
			}
			continue
		}
		p := e.queue[0]
		e.queue[0] = nil
		e.queue = e.queue[1:]
		e.mu.Unlock()
		if p.ctx.Err() != nil {
			continue // cancelled while queued: abandoned
		}

		// Wait for an in-flight slot, flushing what was written so far.
		select {
		case e.slots <- struct{}{}:
		default:
			if c := e.current(); c != nil {
				c.flush()
			}
			if !e.acquire(p.ctx) {
				continue
			}
		}

		// Hand the request to a running program, restarting it if needed.
		if !e.send(p) {
			<-e.slots
			return
		}
	}
}

// acquire waits for an in-flight slot; false when ctx ends or on Close.
func (e *Exec) acquire(ctx context.Context) bool {
	select {
	case e.slots <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	case <-e.closing:
		return false
	}
}

// current returns the running program, or nil.
func (e *Exec) current() *execChild {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.child
}

// send writes p to a live program, starting one (after backoff if it
// crashed before); false when the processor was closed meanwhile.
func (e *Exec) send(p *execPending) bool {
	for {
		c, err := e.running()
		if err != nil {
			if errors.Is(err, errExecClosed) {
				return false
			}
			// The run fails as transient; the next one tries again after
			// backoff.
			e.log.Warn("start exec program", "error", err)
			p.complete(engine.Outcome{Err: engine.Transient(err, 0)})
			return true
		}
		if c.register(p) {
			c.write(p)
			return true
		}
		// The program died between running() and register(); go again.
	}
}

// errExecClosed stops the dispatcher.
var errExecClosed = errors.New("exec processor is closed")

// running returns a live program, starting one when there is none. After
// exits without replies in between, it waits with backoff first.
func (e *Exec) running() (*execChild, error) {
	e.mu.Lock()
	c, failures, closed := e.child, e.failures, e.closed
	e.mu.Unlock()
	if closed {
		return nil, errExecClosed
	}
	if c != nil && !c.isDead() {
		return c, nil
	}
	if failures > 0 {
		wait := backoff(e.opts.RestartBackoff, failures-1)
		e.log.Info("restart exec program", "after", wait, "exits", failures)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-e.closing:
			t.Stop()
			return nil, errExecClosed
		}
	}
	c, err := e.start()
	e.mu.Lock()
	defer e.mu.Unlock()
	if err != nil {
		e.failures++
		return nil, err
	}
	e.child = c
	return c, nil
}

// start launches the program and its reader goroutines.
func (e *Exec) start() (*execChild, error) {
	cmd := exec.Command(e.opts.Command[0], e.opts.Command[1:]...)
	cmd.Dir = e.opts.Dir
	cmd.Env = e.env
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("open stdin of exec program: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("open stdout of exec program: %w", err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("open stderr of exec program: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start exec program %s: %w", e.opts.Command[0], err)
	}
	c := &execChild{
		e:       e,
		cmd:     cmd,
		stdin:   stdin,
		w:       bufio.NewWriterSize(stdin, 64<<10),
		pending: map[string]*execPending{},
		exited:  make(chan struct{}),
	}
	e.log.Info("started exec program", "pid", cmd.Process.Pid)
	var streams sync.WaitGroup
	streams.Add(2)
	go func() { defer streams.Done(); c.readStdout(stdout) }()
	go func() { defer streams.Done(); c.readStderr(stderr) }()
	go func() {
		streams.Wait()
		c.exit(cmd.Wait())
	}()
	return c, nil
}

// newRequestID numbers requests across program restarts.
func (e *Exec) newRequestID() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.nextID++
	return strconv.FormatUint(e.nextID, 10)
}
