package main

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// closedPort returns a 127.0.0.1 address in 20000-29999 that nothing
// listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	for port := 24310; port < 24400; port++ {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		l.Close()
		return addr
	}
	t.Fatal("no free port in 24310-24399")
	return ""
}

func TestWait_TimeoutBeforeAnyAnswerIsUnreachable(t *testing.T) {
	cmd := &waitCmd{Group: "tgrp_x", Timeout: 1500 * time.Millisecond}
	cmd.URL = "http://" + closedPort(t)
	err := cmd.Run(&CLI{}, quietLogger())
	var ec *exitCodeError
	if !errors.As(err, &ec) || ec.code != exitUnreachable {
		t.Fatalf("err = %v, want exit code %d", err, exitUnreachable)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "wait: target did not answer within 1.5s: ") ||
		!strings.Contains(msg, "connection refused") {
		t.Errorf("error %q, want the timeout and the last error (connection refused)", msg)
	}
}
