package bench

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func TestCount(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   float64
		want string
	}{{0, "0"}, {999.4, "999"}, {1000, "1,000"}, {64483.2, "64,483"}, {5387041, "5,387,041"}, {-1234, "-1,234"}} {
		if got := count(tc.in); got != tc.want {
			t.Errorf("count(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestSelect(t *testing.T) {
	t.Parallel()
	got, err := Select([]string{"growth", "append"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "append" || got[1].Name != "growth" {
		t.Errorf("Select kept %v, want append then growth, in the usual order", got)
	}
	if _, err := Select([]string{"append", "nope"}); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("an unknown scenario gave %v, want an error naming it", err)
	}
}

// sampleReport has a row of each kind, with text that Markdown and XML
// must escape.
func sampleReport() *Report {
	return &Report{Started: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC), Duration: time.Minute, Machine: "linux/amd64, 2 CPUs", Postgres: "PostgreSQL 15",
		Rows: []Row{
			{Scenario: "throughput", What: "no-op tasks <a|b> & more", Ordo: "5,000 tasks/s", Baseline: "raw River: 10,000 jobs/s", Ratio: ratio(0.5),
				Target: "≥ 0.50", Checks: []Check{atLeast("ratio", 0.5, 0.5)}, Metrics: map[string]float64{"ratio": 0.5}},
			{Scenario: "step-latency", What: "step latency", Ordo: "p50 6 ms", Target: "p50 ≤ 5 ms",
				Checks: []Check{atMost("p50 ms", 6, 5)}, Metrics: map[string]float64{"p50_ms": 6}, Note: "over 999 steps"},
			{Scenario: "memory", What: "memory", Ordo: "50 MiB", Metrics: map[string]float64{"peak_rss_mib": 50}},
			{Scenario: "replay", What: "replay", Error: "connect: refused"},
			{Scenario: "append", What: "append", Baseline: "not measured: pgbench said\ntwo lines"},
		}}
}

func TestWriteMarkdown(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	if err := sampleReport().WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(b.String(), "\n")
	for i, want := range []string{
		"| what | Ordo | baseline (same run) | ratio | target | met? |",
		"| --- | --- | --- | --- | --- | --- |",
		`| no-op tasks <a\|b> & more | 5,000 tasks/s | raw River: 10,000 jobs/s | 0.50 | ≥ 0.50 | met |`,
		"| step latency | p50 6 ms |  |  | p50 ≤ 5 ms | missed |",
		"| memory | 50 MiB |  |  |  |  |",
		"| replay |  |  |  |  | failed: connect: refused |",
		"| append |  | not measured: pgbench said two lines |  |  |  |", // one row, one line
	} {
		if lines[i] != want {
			t.Errorf("line %d:\n got %s\nwant %s", i+1, lines[i], want)
		}
	}
	if !strings.Contains(b.String(), "- step latency: over 999 steps.") {
		t.Errorf("no note for the step latency row:\n%s", b.String())
	}
}

func TestWriteSVG(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	if err := sampleReport().WriteSVG(&b); err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(&b)
	var texts []string
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v", err)
		}
		if cd, ok := tok.(xml.CharData); ok && strings.TrimSpace(string(cd)) != "" {
			texts = append(texts, string(cd))
		}
	}
	all := strings.Join(texts, "\n")
	for _, want := range []string{"no-op tasks <a|b> & more", "0.50 (target ≥ 0.5)", "step latency — p50 ms", "6 (target ≤ 5)"} {
		if !strings.Contains(all, want) {
			t.Errorf("the chart has no text %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, "memory") {
		t.Error("a row without a ratio or a target has a bar")
	}
}
