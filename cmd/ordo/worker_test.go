package main

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Bad worker flags are refused, naming the flag, before anything connects
// or starts.
func TestWorkerRefusesBadFlags(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"worker"}, "name at least one work queue"},
		{[]string{"worker", "-q", "default", "--workspace-retention", "-5m"}, "workspace-retention: must not be negative"},
		{[]string{"dev", "--workspace-retention", "-5m"}, "workspace-retention: must not be negative"}, // before it starts PostgreSQL
		{[]string{"worker", "-q", "default", "--max-output-bytes", "0"}, "max-output-bytes: must be positive"},
		{[]string{"worker", "-q", "default", "--blob-cache-bytes", "-1"}, "blob-cache-bytes: must be positive"},
	} {
		cmd := exec.Command(ordoBinary(t), c.args...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "ORDO_DATABASE_URL=postgres://nobody@127.0.0.1:1/none"}
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), c.want) {
			t.Errorf("ordo %s: %v, %s; want exit status 2 and %q", strings.Join(c.args, " "), err, out, c.want)
		}
	}
}

func TestWorkspaceRetentionFlag(t *testing.T) {
	if got := workspaceRetention(0); got >= 0 {
		t.Errorf("--workspace-retention 0 gives the worker %v, want a negative retention (kept for ever)", got)
	}
	if got := workspaceRetention(2 * time.Hour); got != 2*time.Hour {
		t.Errorf("--workspace-retention 2h gives the worker %v", got)
	}
}

// The warm Python interpreter is on unless --warm-python=false or
// ORDO_WARM_PYTHON=false turns it off.
func TestWarmPythonFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  string // ORDO_WARM_PYTHON; "" unset
		want string
	}{
		{nil, "", "true"},
		{[]string{"--warm-python=false"}, "", "false"},
		{nil, "false", "false"},
		{[]string{"--warm-python=true"}, "false", "true"},
	} {
		t.Setenv("ORDO_WARM_PYTHON", c.env) // restored when the test ends
		if c.env == "" {
			os.Unsetenv("ORDO_WARM_PYTHON")
		}
		cmd := newWorkerCommand()
		if err := cmd.ParseFlags(c.args); err != nil {
			t.Fatal(err)
		}
		if err := flagsFromEnv(cmd); err != nil {
			t.Fatal(err)
		}
		if got := cmd.Flags().Lookup("warm-python").Value.String(); got != c.want {
			t.Errorf("ordo worker %v with ORDO_WARM_PYTHON=%q: --warm-python is %s, want %s", c.args, c.env, got, c.want)
		}
	}
}
