package projections

import (
	"context"
	"encoding/json"
	"fmt"

	"golang.org/x/sync/errgroup"
)

// copyChunkRows bounds the rows of one COPY transaction. Every transaction
// that writes holds back the gap-free readers of the log (the live
// projector among them) until it ends: short ones keep the read models
// serving fresh data during a replay.
const copyChunkRows = 20_000

// copy writes the rows of src into a new table on a connection of its own,
// with COPY, in transactions of at most copyChunkRows rows.
func (r *replayer) copy(ctx context.Context, t table, src copySource) error {
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	defer conn.Release()
	for {
		_, exhausted, err := copyIn(ctx, conn.Conn().PgConn(), replaySchema+"."+t.name, t.names(), src, copyChunkRows)
		if err != nil || exhausted {
			return err
		}
	}
}

// taskRunCopies is how many COPYs write task_runs at once: its rows are
// the most of the final ones by far, and one COPY of them kept one
// PostgreSQL process busy for seconds while the other core had little left
// to do.
const taskRunCopies = 2

// writeFinal writes the last state of every deployment, flow run, task run
// and attempt, the tables at the same time, and builds each table's indexes
// once its rows are in.
func (r *replayer) writeFinal(ctx context.Context, b *batch) error {
	g, ctx := errgroup.WithContext(ctx)
	// written copies a table's rows by the COPYs given, at once, then
	// builds the table's indexes.
	written := func(table string, copies ...func(context.Context) error) {
		g.Go(func() error {
			cg, cctx := errgroup.WithContext(ctx)
			for _, c := range copies {
				cg.Go(func() error { return c(cctx) })
			}
			if err := cg.Wait(); err != nil {
				return err
			}
			return r.index(ctx, table)
		})
	}

	b.deriveFlowMetrics()
	flows := make([]*flowRunRow, 0, len(b.flowOrder))
	for _, id := range b.flowOrder {
		flows = append(flows, b.flows[id])
	}
	written("flow_runs", func(ctx context.Context) error {
		return r.copy(ctx, flowRunsTable, sliceSource(flows, func(c *copyBuf, row **flowRunRow) error {
			out := flowRunOutOf(*row)
			return out.encode(c)
		}))
	})

	tasks := make([]*taskRunRow, 0, len(b.taskOrder))
	for _, id := range b.taskOrder {
		tasks = append(tasks, b.tasks[id])
	}
	var taskCopies []func(context.Context) error
	for part := range taskRunCopies {
		rows := tasks[part*len(tasks)/taskRunCopies : (part+1)*len(tasks)/taskRunCopies]
		taskCopies = append(taskCopies, func(ctx context.Context) error {
			// Task runs created from one decoded spec share its slices (see
			// decoder.creation): the spec is encoded once per shared Command.
			encoded := map[*string][]byte{}
			return r.copy(ctx, taskRunsTable, sliceSource(rows, func(c *copyBuf, row **taskRunRow) error {
				out := taskRunOutOf(*row)
				var key *string
				if cmd := out.Task.Command; len(cmd) > 0 {
					key = &cmd[0]
				}
				task, ok := encoded[key]
				if !ok || key == nil {
					var err error
					if task, err = json.Marshal(out.Task); err != nil {
						return fmt.Errorf("task run %s: encode task: %w", out.ID, err)
					}
					if key != nil {
						encoded[key] = task
					}
				}
				return out.encode(c, task)
			}))
		})
	}
	written("task_runs", taskCopies...)

	attempts := make([]*attemptRow, 0, len(b.attemptKeys))
	for _, k := range b.attemptKeys {
		attempts = append(attempts, b.attempts[k])
	}
	written("task_run_attempts", func(ctx context.Context) error {
		return r.copy(ctx, attemptsTable, sliceSource(attempts, func(c *copyBuf, a **attemptRow) error {
			return (*a).encode(c)
		}))
	})

	var deploys []*deploymentRow
	for _, id := range b.deployOrder {
		if row := b.deploys[id]; !row.deleted {
			deploys = append(deploys, row)
		}
	}
	written("deployments", func(ctx context.Context) error {
		return r.copy(ctx, deploymentsTable, sliceSource(deploys, func(c *copyBuf, row **deploymentRow) error {
			out := deploymentOutOf((*row).d)
			return out.encode(c)
		}))
	})
	return g.Wait()
}
