package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/client"
	"github.com/ordoflow/ordo/domain"
)

// bigOutputBytes is the size of the output whose upload the test
// interrupts: large enough that its COPY into blob_chunks lasts long
// enough to be seen and killed.
const bigOutputBytes = 96 << 20

// size.txt sorts after big.bin, so the crashed attempt stored nothing
// before the big file's upload.
var killUploadDeployment = fmt.Sprintf(`
name: killupload
work_queue: killupload
flow:
  name: killupload
  tasks:
    - name: produce
      retries: 1
      command: [sh, -c, 'head -c %[1]d /dev/urandom > "$ORDO_OUTPUT_DIR/big.bin" && echo %[1]d > "$ORDO_OUTPUT_DIR/size.txt"']
    - name: consume
      depends_on: [produce]
      command: [sh, -c, 'n=$(stat -c %%s "$ORDO_INPUT_DIR/produce/big.bin") && test "$n" -eq "$(cat "$ORDO_INPUT_DIR/produce/size.txt")" && echo "{\"bytes\": $n}" > "$ORDO_RESULT_PATH"']
`, bigOutputBytes)

// TestEndToEndWorkerKilledMidUpload: a worker SIGKILLed while it streams
// an output into the default (postgres) blob store leaves no partial blob;
// the reaper declares it dead, the attempt runs again on another worker,
// the run completes, and every blob the store holds is whole and named by
// an event.
func TestEndToEndWorkerKilledMidUpload(t *testing.T) {
	t.Parallel()
	started := time.Now()
	c := startCluster(t)
	ctx := context.Background()
	db, err := pgx.Connect(ctx, c.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)

	c.ordo("deploy", "-f", c.writeFile("killupload.yaml", killUploadDeployment))
	first := c.start("worker", "-q", "killupload", "--name", "first", "--workspace-dir", filepath.Join(c.dir, "ws-first"))
	runID := runIDFrom(t, c.ordo("run", "killupload"))

	// the upload is in flight when the worker's COPY into blob_chunks runs
	// and has sent a quarter of the file (chunks written, not committed);
	// poll for it, then kill the worker
	var copied int64
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		err := db.QueryRow(ctx, `SELECT p.bytes_processed FROM pg_stat_progress_copy p
			JOIN pg_stat_activity a ON a.pid = p.pid
			WHERE p.datname = current_database() AND a.query ILIKE 'copy%blob_chunks%' AND p.bytes_processed >= $1`, bigOutputBytes/4).Scan(&copied)
		if err == nil {
			break
		}
		if err != pgx.ErrNoRows {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			var run client.FlowRun
			getJSON(t, c, "/runs/"+runID, &run)
			t.Fatalf("never saw the output's upload in flight (run %s); if it completed first, make bigOutputBytes larger", run.State.Type)
		}
	}
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	killed := time.Now()
	t.Logf("killed the worker %v after the start, with %d of %d bytes copied", killed.Sub(started).Round(time.Millisecond), copied, bigOutputBytes)

	// the database ends the COPY of the closed connection and rolls it back:
	// had the upload finished before the kill, its blob would be stored
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var copies int
		if err := db.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND query ILIKE 'copy%blob_chunks%' AND pid <> pg_backend_pid()`).Scan(&copies); err != nil {
			t.Fatal(err)
		}
		if copies == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the killed worker's COPY still runs 20 s after the kill")
		}
	}
	var blobs, chunks int
	if err := db.QueryRow(ctx, `SELECT (SELECT count(*) FROM blobs), (SELECT count(*) FROM blob_chunks)`).Scan(&blobs, &chunks); err != nil {
		t.Fatal(err)
	}
	if blobs != 0 {
		t.Fatalf("%d blobs stored after the kill: the upload was not in flight (make bigOutputBytes larger)", blobs)
	}
	if chunks != 0 {
		t.Fatalf("%d chunks of the killed upload are left in blob_chunks", chunks)
	}

	c.start("worker", "-q", "killupload", "--name", "second", "--workspace-dir", filepath.Join(c.dir, "ws-second"))
	var run client.FlowRun
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
		getJSON(t, c, "/runs/"+runID, &run)
		if run.State.Type.Terminal() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the run is %s 2 minutes after the kill", run.State.Type)
		}
	}
	if run.State.Type != "COMPLETED" {
		t.Fatalf("the run ended %s: %s", run.State.Type, run.State.Message)
	}
	t.Logf("the run completed %v after the kill", time.Since(killed).Round(time.Millisecond))
	for _, tr := range run.TaskRuns {
		if tr.TaskName == "consume" && string(tr.Result) != fmt.Sprintf(`{"bytes":%d}`, bigOutputBytes) {
			t.Errorf("consume's result is %s, want the input's size", tr.Result)
		}
	}

	// the log: produce's first attempt started on the first worker and was
	// recorded crashed by the reaper; the second ran on the second worker
	// and completed with both outputs
	var trail struct {
		Items []client.Event `json:"items"`
	}
	getJSON(t, c, "/runs/"+runID+"/events", &trail)
	var starts, crashes []string
	named := map[string]domain.Output{}
	completedAttempt := 0
	for _, e := range trail.Items {
		switch e.Type {
		case "TaskRunStarted":
			if e.TaskName == "produce" {
				var d domain.TaskRunStarted
				_ = json.Unmarshal(e.Data, &d)
				starts = append(starts, fmt.Sprintf("%d@%s", d.Attempt, d.Worker))
			}
		case "TaskRunRetryScheduled", "TaskRunFailed":
			var d domain.AttemptFailure
			_ = json.Unmarshal(e.Data, &d)
			crashes = append(crashes, fmt.Sprintf("%s %s attempt %d crashed=%v by %s", e.TaskName, e.Type, d.Attempt, d.Crashed, e.Metadata.Actor))
		case "TaskRunCompleted":
			var d domain.TaskRunCompleted
			if err := json.Unmarshal(e.Data, &d); err != nil {
				t.Fatal(err)
			}
			if e.TaskName == "produce" {
				completedAttempt = d.Attempt
			}
			for _, o := range d.Outputs {
				named[o.SHA256] = o
			}
		}
	}
	if len(starts) != 2 || !strings.HasPrefix(starts[0], "1@first") || !strings.HasPrefix(starts[1], "2@second") {
		t.Errorf("produce's attempts started %v, want attempt 1 on the first worker and 2 on the second", starts)
	}
	if len(crashes) != 1 || crashes[0] != "produce TaskRunRetryScheduled attempt 1 crashed=true by reaper" {
		t.Errorf("failed attempts %q, want produce's first recorded crashed by the reaper", crashes)
	}
	if completedAttempt != 2 {
		t.Errorf("produce completed with attempt %d, want 2", completedAttempt)
	}

	// the store: every blob whole (its chunks numbered from 0 and adding up
	// to its size) and named by an event, and every named blob there
	rows, err := db.Query(ctx, `SELECT b.digest, b.size, coalesce(sum(length(c.data)), 0), count(c.seq), coalesce(max(c.seq) + 1, 0)
		FROM blobs b LEFT JOIN blob_chunks c USING (digest) GROUP BY b.digest, b.size`)
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]bool{}
	for rows.Next() {
		var digest string
		var size, sum, chunks, span int64
		if err := rows.Scan(&digest, &size, &sum, &chunks, &span); err != nil {
			t.Fatal(err)
		}
		stored[digest] = true
		if sum != size || chunks != span {
			t.Errorf("blob %s of %d bytes has %d chunks numbered 0-%d of %d bytes in all", digest, size, chunks, span-1, sum)
		}
		if o, ok := named[digest]; !ok {
			t.Errorf("blob %s (%d bytes) is named by no event", digest, size)
		} else if o.Size != size {
			t.Errorf("blob %s is %d bytes, its output %s %d", digest, size, o.Name, o.Size)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for d, o := range named {
		if !stored[d] {
			t.Errorf("output %s (%s) is not in the store", o.Name, d)
		}
	}
	if len(named) != 2 {
		t.Errorf("the events name %d blobs, want big.bin and size.txt", len(named))
	}

	dir := t.TempDir()
	c.ordo("runs", "outputs", runID, "--download", dir) // verifies each file's digest
	if fi, err := os.Stat(filepath.Join(dir, "produce", "big.bin")); err != nil || fi.Size() != bigOutputBytes {
		t.Errorf("big.bin did not download whole: %v", err)
	}
	c.validateLog()
	t.Logf("took %v", time.Since(started).Round(time.Millisecond))
}
