package pipeline_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/taskpipe/taskpipe/pipeline"
)

func TestLogProgress_NamesOnlyWhatIsKnown(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    pipeline.Progress
		want string
	}{
		{"a query source, no total nor rate yet",
			pipeline.Progress{GroupID: "tgrp_1", Total: -1, Read: 40, Submitted: 40, ETA: -1},
			`level=INFO msg="pipeline progress" group_id=tgrp_1 read=40 completed=0 running=40 ` +
				`failed=0 cancelled=0 invalid=0 skipped=0 rows_per_s=0.0`},
		{"a file source near the end",
			pipeline.Progress{GroupID: "tgrp_2", Total: 100, Read: 100, Submitted: 100,
				Completed: 90, Rate: 45, ETA: 220 * time.Millisecond, Done: true},
			`level=INFO msg="pipeline finished" group_id=tgrp_2 read=100 total=100 completed=90 ` +
				`running=10 failed=0 cancelled=0 invalid=0 skipped=0 rows_per_s=45.0 eta=0s`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{
				ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
					if a.Key == slog.TimeKey {
						return slog.Attr{}
					}
					return a
				}}))
			pipeline.LogProgress(log)(tc.p)
			if got := strings.TrimSpace(buf.String()); got != tc.want {
				t.Errorf("logged\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}
