package jobs_test

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/jobs"
)

// A command that fails says why in its failure's message: the last lines it
// wrote on stderr, bounded, follow the exit status, so that the reason shows
// in the run's state message, the API's error and the CLI without opening
// the logs.
func TestFailureMessageQuotesStderr(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startWorker(t, jobs.WorkerOptions{})
	python := sh("python", `echo 'loading data'; echo 'Traceback (most recent call last):' >&2
echo '  File "train.py", line 1, in <module>' >&2; echo 'noise on stdout'
echo "ModuleNotFoundError: No module named 'pandas'" >&2; exit 1`)
	// 200 lines of 300 bytes, then a line with invalid UTF-8
	long := sh("long", `i=0; while [ $i -lt 200 ]; do printf 'line%05d %0290d\n' $i 0 >&2; i=$((i+1)); done
printf 'last \377 line\n' >&2; exit 2`)
	silent := sh("silent", `echo 'only stdout'; exit 4`)
	fr := b.wait(t, b.create(t, domain.FlowSpec{Name: "why", Tasks: []domain.TaskSpec{python, long, silent}}, nil).ID)
	tasks := b.tasks(t, fr)
	msg := func(name string) string {
		t.Helper()
		f := tasks[name].run.LastFailure
		if f == nil {
			t.Fatalf("task %s did not fail", name)
		}
		if f.Error != tasks[name].run.State.Message {
			t.Errorf("task %s: state message %q, failure %q", name, tasks[name].run.State.Message, f.Error)
		}
		return f.Error
	}

	if got, want := msg("python"), `exited with code 1; stderr: Traceback (most recent call last): | File "train.py", line 1, in <module> | ModuleNotFoundError: No module named 'pandas'`; got != want {
		t.Errorf("python task's failure:\n got %q\nwant %q", got, want)
	}

	got := msg("long")
	if !strings.HasPrefix(got, "exited with code 2; stderr: …") || !strings.HasSuffix(got, "last \uFFFD line") {
		t.Errorf("long task's failure does not end with its last stderr line, cut to fit: %q", got)
	}
	if tail := strings.TrimPrefix(got, "exited with code 2; stderr: "); len(tail) > 1024 || strings.Count(tail, " | ") > 4 {
		t.Errorf("long task's failure quotes %d bytes in %d lines of stderr, want at most 1024 bytes and 5 lines", len(tail), strings.Count(tail, " | ")+1)
	}
	if !utf8.ValidString(got) || strings.Contains(got, "line00000") {
		t.Errorf("long task's failure: %q", got)
	}

	if got := msg("silent"); got != "exited with code 4" {
		t.Errorf("a task that wrote nothing on stderr: %q, want the exit status alone", got)
	}

	// The time-out runs from the process's start: on a loaded machine it
	// can strike before the shell has written its line, and then the task
	// runs again with twice the time, until the line was written in time.
	for timeout := 500 * time.Millisecond; ; timeout *= 2 {
		slow := sh("slow", `echo 'waiting for the lock on /data/db' >&2; exec sleep 300`)
		slow.TimeoutSeconds = timeout.Seconds()
		fr := b.wait(t, b.create(t, domain.FlowSpec{Name: "why-slow", Tasks: []domain.TaskSpec{slow}}, nil).ID)
		tasks = b.tasks(t, fr)
		got := msg("slow")
		if !strings.Contains(got, "; stderr: ") && timeout < time.Minute {
			t.Logf("the task timed out before it wrote on stderr (%q); again with twice the time", got)
			continue
		}
		if !strings.HasPrefix(got, "timed out after "+timeout.String()) || !strings.HasSuffix(got, "; stderr: waiting for the lock on /data/db") {
			t.Errorf("timed out task's failure: %q", got)
		}
		break
	}
	b.validate(t)
}
