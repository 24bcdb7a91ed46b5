package processors

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
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

// execChild is one run of the program and the requests it holds.
type execChild struct {
	e     *Exec
	cmd   *exec.Cmd
	stdin io.WriteCloser

	wmu sync.Mutex // guards w
	w   *bufio.Writer

	mu      sync.Mutex
	pending map[string]*execPending
	dead    bool
	stderr  []string // the last stderrLines lines
	exited  chan struct{}
}

// isDead reports whether the program has exited.
func (c *execChild) isDead() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dead
}

// register assigns p a request id in this program; false when the program
// has already exited.
func (c *execChild) register(p *execPending) bool {
	id := c.e.newRequestID()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return false
	}
	c.pending[id] = p
	p.id = id
	if !p.job.Deadline.IsZero() {
		p.timer = time.AfterFunc(time.Until(p.job.Deadline), func() {
			if q := c.take(id); q != nil {
				q.complete(engine.Outcome{Err: engine.Transient(
					errors.New("exec program gave no reply before the run's deadline"), 0)})
			}
		})
	}
	return true
}

// write sends p's request line; a failed write is left to the exit
// handler, which fails every request the program held.
func (c *execChild) write(p *execPending) {
	req := execRequest{ID: p.id, RunID: p.job.RunID, Input: p.job.Input.Input}
	if p.job.Input.TaskSpec != nil {
		req.OutputSchema = &p.job.Input.TaskSpec.OutputSchema
	}
	line, err := json.Marshal(req)
	if err != nil {
		if q := c.take(req.ID); q != nil {
			q.complete(engine.Outcome{Err: fmt.Errorf("encode exec request: %w", err)})
		}
		return
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, _ = c.w.Write(append(line, '\n'))
}

// flush pushes buffered request lines to the program.
func (c *execChild) flush() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.w.Flush()
}

// take removes and returns the pending request id, or nil.
func (c *execChild) take(id string) *execPending {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.pending[id]
	if !ok {
		return nil
	}
	delete(c.pending, id)
	return p
}

// readStdout matches reply lines to pending requests.
func (c *execChild) readStdout(stdout io.Reader) {
	br := bufio.NewReaderSize(stdout, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if line = bytes.TrimSpace(line); len(line) > 0 {
			c.handleLine(line)
		}
		if err != nil {
			return
		}
	}
}

// handleLine completes the run a reply line is for; other lines are logged
// with their text.
func (c *execChild) handleLine(line []byte) {
	var rep execReply
	if err := json.Unmarshal(line, &rep); err != nil || rep.ID == nil {
		c.e.log.Warn("exec program wrote a line that is not a reply",
			"line", snippet(line), "pid", c.cmd.Process.Pid)
		return
	}
	p := c.take(*rep.ID)
	if p == nil {
		c.e.log.Warn("exec program replied to an unknown request id",
			"id", *rep.ID, "line", snippet(line))
		return
	}
	c.e.mu.Lock()
	c.e.failures = 0
	c.e.mu.Unlock()
	if rep.Error == nil && (len(rep.Output) == 0 || string(rep.Output) == "null") {
		p.complete(engine.Outcome{Err: fmt.Errorf(
			"exec program reply has neither output nor error: %s", snippet(line))})
		return
	}
	p.complete(replyOutcome(p.job, rep.httpReply, "exec program "+c.e.opts.Command[0]))
}

// readStderr keeps the last lines of stderr for crash reports.
func (c *execChild) readStderr(stderr io.Reader) {
	sc := bufio.NewScanner(stderr)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := snippet(sc.Bytes())
		c.e.log.Debug("exec program stderr", "line", line)
		c.mu.Lock()
		c.stderr = append(c.stderr, line)
		if len(c.stderr) > stderrLines {
			c.stderr = c.stderr[1:]
		}
		c.mu.Unlock()
	}
}

// exit fails every request the program held and marks it dead, so the
// dispatcher starts another.
func (c *execChild) exit(waitErr error) {
	c.mu.Lock()
	c.dead = true
	held := c.pending
	c.pending = map[string]*execPending{}
	stderr := strings.Join(c.stderr, "\n")
	c.mu.Unlock()
	close(c.exited)

	status := "exited"
	if waitErr != nil {
		status = "exited: " + waitErr.Error()
	}
	e := c.e
	e.mu.Lock()
	closing := e.closed
	if e.child == c {
		e.failures++
	}
	e.mu.Unlock()
	if closing {
		return // runs held at Close are abandoned, not failed
	}
	e.log.Warn("exec program exited", "status", status, "held_runs", len(held))
	err := fmt.Errorf("exec program %s %s while running this run", e.opts.Command[0], status)
	if stderr != "" {
		err = fmt.Errorf("%w; recent stderr:\n%s", err, stderr)
	}
	if !e.opts.FailOnCrash {
		err = engine.Transient(err, 0)
	}
	for _, p := range held {
		p.complete(engine.Outcome{Err: err})
	}
	e.signal()
}

// stop closes stdin and waits for the program to exit, killing it after
// grace.
func (c *execChild) stop(grace time.Duration) {
	c.flush()
	_ = c.stdin.Close()
	select {
	case <-c.exited:
	case <-time.After(grace):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

// complete reports the outcome unless the run was abandoned, and frees its
// in-flight slot.
func (p *execPending) complete(o engine.Outcome) {
	if p.timer != nil {
		p.timer.Stop()
	}
	if p.ctx.Err() == nil {
		p.r.Complete(p.job.RunID, o)
	}
	<-p.slots
}
