package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const twoHostsDeployment = `
name: two-hosts
work_queue: cpu
flow:
  name: two-hosts
  tasks:
    - name: train
      work_queue: gpu
      command: [sh, -c, 'mkdir "$ORDO_OUTPUT_DIR/model" && printf "weights of $(hostname)" > "$ORDO_OUTPUT_DIR/model/weights.bin"']
    - name: evaluate
      depends_on: [train]
      command: [sh, -c, 'cat "$ORDO_INPUT_DIR/train/model/weights.bin" > "$ORDO_OUTPUT_DIR/seen.txt" && echo "{\"r2\": 0.96}" > "$ORDO_METRICS_PATH"']
`

// TestEndToEndFilesBetweenWorkers: with the real binary, a file written by
// a task on one worker is the input of a task on another worker with a
// workspace directory of its own, through the blob store both open.
func TestEndToEndFilesBetweenWorkers(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	store := "file://" + filepath.Join(c.dir, "blobs")
	c.start("worker", "-q", "gpu", "--name", "gpu-host", "--workspace-dir", filepath.Join(c.dir, "ws-gpu"), "--blob-store", store)
	c.start("worker", "-q", "cpu", "--name", "cpu-host", "--workspace-dir", filepath.Join(c.dir, "ws-cpu"), "--blob-store", store)
	c.ordo("deploy", "-f", c.writeFile("two-hosts.yaml", twoHostsDeployment))
	out, code := c.ordoCode("run", "two-hosts", "--watch")
	if code != 0 || !strings.Contains(out, "ended COMPLETED") {
		t.Fatalf("exit %d, output:\n%s", code, out)
	}
	var events struct {
		Items []struct {
			Type string          `json:"type"`
			Data json.RawMessage `json:"data"`
		} `json:"items"`
	}
	getJSON(t, c, "/runs/"+runIDFrom(t, out)+"/events", &events)
	var completions []string
	for _, e := range events.Items {
		if e.Type == "TaskRunCompleted" {
			completions = append(completions, string(e.Data))
		}
	}
	all := strings.Join(completions, "\n")
	for _, want := range []string{`"name":"model/weights.bin"`, `"name":"seen.txt"`, `"metrics":{"r2":0.96}`} {
		if !strings.Contains(all, want) {
			t.Errorf("the completions do not have %s:\n%s", want, all)
		}
	}
	// the evaluating worker fetched the model into its own cache
	cached, _ := os.ReadDir(filepath.Join(c.dir, "ws-cpu", ".blobs"))
	if len(cached) != 1 {
		t.Errorf("the cpu worker's blob cache holds %d files, want the model", len(cached))
	}
	c.validateLog()
}
