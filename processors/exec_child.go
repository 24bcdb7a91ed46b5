package processors

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/taskpipe/taskpipe/engine"
)

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
