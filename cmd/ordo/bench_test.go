package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ordoflow/ordo/internal/bench"
	"github.com/ordoflow/ordo/internal/pgtest"
	"github.com/ordoflow/ordo/internal/seaweed"
)

// TestBenchQuickGroup1 and the others run `ordo bench --quick` as a user
// would, so that the benchmark harness cannot rot: every scenario runs and
// gives figures, and the Markdown, JSON and SVG files are written and
// well-formed. They never judge a speed, so they run beside the other
// tests, each on a group of the scenarios (most of their time is spent
// waiting for schedules, interpreters and servers to start). Each starts
// its `ordo bench` before t.Parallel: go test resumes parallel tests in no
// set order, and these, the longest of the package, were often the last
// ones running.
func TestBenchQuickGroup1(t *testing.T) { benchQuickGroup(t, 0) }
func TestBenchQuickGroup2(t *testing.T) { benchQuickGroup(t, 1) }
func TestBenchQuickGroup3(t *testing.T) { benchQuickGroup(t, 2) }

func benchQuickGroup(t *testing.T, i int) {
	groups := benchGroups()
	if len(groups) != 3 {
		t.Fatalf("%d groups of scenarios, want one per TestBenchQuickGroup test", len(groups))
	}
	run := startBenchQuick(t, groups[i])
	t.Parallel()
	run.check(t)
}

// benchGroups splits the scenarios into groups of about the same quick
// run time: the long ones each lead a group, the others are dealt out.
func benchGroups() [][]string {
	groups := [][]string{{"python-pipeline", "python-trivial"}, {"schedules"}, {"blobs-s3", "growth"}}
	placed := map[string]bool{}
	for _, g := range groups {
		for _, n := range g {
			placed[n] = true
		}
	}
	i := 0
	for _, s := range bench.Scenarios() {
		if !placed[s.Name] {
			groups[i%len(groups)] = append(groups[i%len(groups)], s.Name)
			i++
		}
	}
	return groups
}

// quickBench is an `ordo bench --quick --only` under way.
type quickBench struct {
	only           []string
	md, js, svg    string
	stdout, stderr bytes.Buffer
	done           chan struct{}
	err            error
}

// startBenchQuick starts `ordo bench --quick --only` the named scenarios
// (once the binary is built) without waiting for it.
func startBenchQuick(t *testing.T, only []string) *quickBench {
	dir := t.TempDir()
	r := &quickBench{only: only, md: filepath.Join(dir, "bench.md"), js: filepath.Join(dir, "bench.json"), svg: filepath.Join(dir, "bench.svg"), done: make(chan struct{})}
	env := append(os.Environ(), "ORDO_DATABASE_URL="+pgtest.URL(t))
	// A guard against a hang, not a speed assertion.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(func() { // before the database is dropped
		cancel()
		<-r.done
	})
	go func() {
		defer close(r.done)
		bin, err := buildOrdo()
		if err != nil {
			r.err = err
			return
		}
		cmd := exec.CommandContext(ctx, bin, "bench", "--quick", "--only", strings.Join(only, ","), "--markdown", r.md, "--json", r.js, "--svg", r.svg)
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = &r.stdout, &r.stderr
		r.err = cmd.Run()
	}()
	return r
}

// check waits for the bench to end and checks its report, table and chart.
func (r *quickBench) check(t *testing.T) {
	<-r.done
	only, md, js, svg := r.only, r.md, r.js, r.svg
	stdout, stderr := &r.stdout, &r.stderr
	if r.err != nil {
		t.Fatalf("ordo bench --quick: %v\nstdout:\n%s\nstderr:\n%s", r.err, stdout.String(), tail(stderr.String(), 6000))
	}

	var rep bench.Report
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("the JSON report does not parse: %v", err)
	}
	if !rep.Quick {
		t.Error("the JSON report does not say it was a quick run")
	}
	// blobs-s3 needs SeaweedFS's weed, which only CI must have built.
	_, weedErr := seaweed.Find()
	skipS3 := errors.Is(weedErr, seaweed.ErrMissing) && os.Getenv("ORDO_REQUIRE_S3") == ""
	scenarios, err := bench.Select(only)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range scenarios {
		rows := 0
		for _, r := range rep.Rows {
			if r.Scenario != s.Name {
				continue
			}
			rows++
			if s.Name == "blobs-s3" && skipS3 {
				continue
			}
			// the Python scenarios say so when the interpreter lacks the libraries
			if strings.HasPrefix(r.Note, "skipped:") {
				continue
			}
			if r.Error != "" {
				t.Errorf("%s: %s", r.What, r.Error)
			}
			if r.Ordo == "" || len(r.Metrics) == 0 {
				t.Errorf("%s: no figures", r.What)
			}
			for k, v := range r.Metrics {
				if !(v > 0) || math.IsInf(v, 0) {
					t.Errorf("%s: %s = %v, want a positive figure", r.What, k, v)
				}
			}
			if !strings.Contains(stdout.String(), r.What) {
				t.Errorf("the printed table has no row %q", r.What)
			}
		}
		if rows == 0 {
			t.Errorf("scenario %s gave no row", s.Name)
		}
	}
	if first := fmt.Sprintf("[1/%d %s]", len(scenarios), scenarios[0].Name); !strings.Contains(stderr.String(), first) {
		t.Errorf("no progress on standard error:\n%s", tail(stderr.String(), 2000))
	}

	b, err = os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	var tableLines int
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "| ") && strings.HasSuffix(line, " |") {
			tableLines++
		}
	}
	if want := len(rep.Rows) + 2; tableLines != want {
		t.Errorf("the Markdown table has %d lines, want a header, a rule and %d rows:\n%s", tableLines, len(rep.Rows), b)
	}

	// Unmarshal reads the whole root element, so any syntax error shows.
	var chart struct{ XMLName xml.Name }
	if b, err = os.ReadFile(svg); err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(b, &chart); err != nil {
		t.Fatalf("the SVG chart is not well-formed XML: %v", err)
	}
	if chart.XMLName.Local != "svg" {
		t.Errorf("the chart's root element is %q, want svg", chart.XMLName.Local)
	}
}

func TestBenchUnknownScenario(t *testing.T) {
	t.Parallel()
	out, err := exec.Command(ordoBinary(t), "bench", "--only", "throughput,nope").CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), `unknown scenario "nope"`) {
		t.Errorf("ordo bench --only nope: %v, %s; want exit status 2 naming the scenario", err, out)
	}
}

// ORDO_JSON=1, which asks the listing commands for JSON, must not become
// the name of bench's JSON file; ORDO_BENCH_JSON is that file.
func TestBenchFileFlagsFromTheirOwnEnv(t *testing.T) {
	t.Setenv("ORDO_JSON", "1")
	t.Setenv("ORDO_BENCH_SVG", "chart.svg")
	cmd := newBenchCommand()
	if err := flagsFromEnv(cmd); err != nil {
		t.Fatal(err)
	}
	if got := cmd.Flags().Lookup("json").Value.String(); got != "" {
		t.Errorf("ORDO_JSON=1 set bench's --json to %q", got)
	}
	if got := cmd.Flags().Lookup("svg").Value.String(); got != "chart.svg" {
		t.Errorf("ORDO_BENCH_SVG set --svg to %q, want chart.svg", got)
	}
	if usage := cmd.Flags().Lookup("markdown").Usage; !strings.Contains(usage, "ORDO_BENCH_MARKDOWN") {
		t.Errorf("--markdown's help does not name ORDO_BENCH_MARKDOWN: %q", usage)
	}
}
