package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ordoflow/ordo/domain"
)

// BlobMemory is the resident memory of a worker process, in bytes, while it
// stores a task's output in the blob store and fetches it back as the next
// task's input.
type BlobMemory struct {
	Bytes      int64
	Idle, Peak int64
	Wall       time.Duration // the run, created → ended
}

// blobPassFlow writes an output of n bytes that nothing compresses or
// deduplicates, then reads it whole from ORDO_INPUT_DIR and checks its size.
func blobPassFlow(n int64) domain.FlowSpec {
	return domain.FlowSpec{Name: "blob-pass", Tasks: []domain.TaskSpec{
		{Name: "write", Command: []string{"sh", "-c", fmt.Sprintf(`head -c %d /dev/urandom > "$ORDO_OUTPUT_DIR/big.bin"`, n)}},
		{Name: "read", DependsOn: []string{"write"}, Command: []string{"sh", "-c",
			fmt.Sprintf(`test "$(wc -c < "$ORDO_INPUT_DIR/write/big.bin")" -eq %d`, n)}},
	}}
}

// MeasureBlobMemory starts a worker (the postgres blob store, its default)
// on a new database, runs blobPassFlow with an output of mib MiB, and reads
// the worker's peak resident set (VmHWM) from /proc. No server runs: the
// run's end is read from the log.
func MeasureBlobMemory(ctx context.Context, env Env, procs *Processes, mib int) (BlobMemory, error) {
	url, err := env.newDatabase(ctx)
	if err != nil {
		return BlobMemory{}, err
	}
	env.logf("starting an `ordo worker` process")
	worker, o, err := startWorker(ctx, env, procs, url)
	if err != nil {
		return BlobMemory{}, err
	}
	defer worker.stop()
	defer o.Close()
	m := BlobMemory{Bytes: int64(mib) << 20}
	if m.Idle, err = procStatus(worker.cmd.Process.Pid, "VmRSS"); err != nil {
		return m, err
	}
	env.logf("a task writes a %d MiB output, the next reads it as its input", mib)
	// The wait ends early if the worker dies.
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-worker.done:
			cancel()
		case <-runCtx.Done():
		}
	}()
	if m.Wall, err = o.wallTime(runCtx, blobPassFlow(m.Bytes)); err != nil {
		if worker.exited() {
			return m, fmt.Errorf("the worker exited: %s", worker.tail())
		}
		return m, err
	}
	if m.Peak, err = procStatus(worker.cmd.Process.Pid, "VmHWM"); err != nil {
		return m, err
	}
	return m, worker.stop()
}

func workerMemoryBlobsScenario(ctx context.Context, env Env, opts Options) ([]Row, error) {
	if opts.Processes == nil {
		return nil, errors.New("no ordo binary to start as a worker (Options.Processes)")
	}
	m, err := MeasureBlobMemory(ctx, env, opts.Processes, opts.Sizes.WorkerBlobMiB)
	if err != nil {
		return nil, err
	}
	peak := float64(m.Peak) / (1 << 20)
	return []Row{{
		What:   fmt.Sprintf("peak resident memory (VmHWM) of an `ordo worker` process that stores a %s output and fetches it as the next task's input (postgres blob store)", mib(m.Bytes)),
		Ordo:   mib(m.Peak),
		Target: "< 100 MiB",
		Checks: []Check{atMost("peak MiB", peak, 100)},
		Metrics: map[string]float64{"peak_rss_mib": peak, "idle_rss_mib": float64(m.Idle) / (1 << 20),
			"bytes": float64(m.Bytes), "seconds": m.Wall.Seconds()},
		Note: fmt.Sprintf("%s when idle; the run took %s (created → ended), the output random bytes from /dev/urandom",
			mib(m.Idle), seconds(m.Wall)),
	}}, nil
}
