package jobs

import (
	"context"
	"sync"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivershared/baseservice"
	"github.com/riverqueue/river/rivershared/riverpilot"
	"github.com/riverqueue/river/rivertype"
)

// A worker's task jobs end in Ordo's own transactions, which delete them
// (see settlement.finishedJobs). River does not know that: when Work
// returns, its completer still sends the job's id to PostgreSQL to be
// marked completed, in a statement that joins its batch of ids to
// river_job and, finding the rows gone, changes nothing. Measured with
// pg_stat_statements, that statement cost as much PostgreSQL time per
// no-op task as River's fetch.
//
// The worker therefore gives its River client a driver whose pilot (the
// layer through which River's client runs its queries) leaves out of each
// completion the jobs a committed transaction of this worker deleted. For
// those jobs the statement could not have changed a row: it only writes
// rows that exist. Every other completion goes to River as before.
//
// River's pilot interface is the one River's own extensions use and is not
// promised stable across River versions; TestPilotParamsFields fails when
// the completion's parameters change shape.

// deletedJobs are the River jobs that a committed transaction of this
// worker deleted and whose completion River has not sent yet.
type deletedJobs struct {
	mu      sync.Mutex
	ids     map[int64]struct{}
	leftOut int64 // completions left out so far
}

// deletedJobsMax bounds the set should completions never come (they always
// do while the client runs); a forgotten id only costs a statement.
const deletedJobsMax = 1 << 16

func (d *deletedJobs) add(ids []int64) {
	if len(ids) == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ids == nil || len(d.ids)+len(ids) > deletedJobsMax {
		d.ids = make(map[int64]struct{}, len(ids))
	}
	for _, id := range ids {
		d.ids[id] = struct{}{}
	}
}

// take removes the ids that are in the set and reports, for each id,
// whether it was.
func (d *deletedJobs) take(ids []int64) (deleted []bool, n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, id := range ids {
		if _, ok := d.ids[id]; ok {
			if deleted == nil {
				deleted = make([]bool, len(ids))
			}
			deleted[i] = true
			delete(d.ids, id)
			n++
		}
	}
	d.leftOut += int64(n)
	return deleted, n
}

// putBack returns to the set the ids that take took: River sends a
// completion whose statement failed again, with the same ids, and those
// must be left out again. Sent the second time, the completion of a job
// whose deletion a failover to an asynchronous standby lost would mark it
// completed, with nothing in the log to say so, once it runs again.
func (d *deletedJobs) putBack(ids []int64, deleted []bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ids == nil {
		d.ids = make(map[int64]struct{})
	}
	for i, gone := range deleted {
		if gone {
			d.ids[ids[i]] = struct{}{}
			d.leftOut--
		}
	}
}

// workerDriver is River's pgx driver with the worker's pilot.
type workerDriver struct {
	*riverpgxv5.Driver
	pilot *workerPilot
}

func newWorkerDriver(pool *pgxpool.Pool, deleted *deletedJobs) *workerDriver {
	return &workerDriver{Driver: riverpgxv5.New(pool), pilot: &workerPilot{deleted: deleted}}
}

// PluginInit and PluginPilot make River's client use the worker's pilot.
func (d *workerDriver) PluginInit(*baseservice.Archetype) {}

func (d *workerDriver) PluginPilot() riverpilot.Pilot { return d.pilot }

// workerPilot is River's standard pilot, but for completions of jobs the
// worker deleted.
type workerPilot struct {
	riverpilot.StandardPilot
	deleted *deletedJobs
}

func (p *workerPilot) JobSetStateIfRunningMany(ctx context.Context, exec riverdriver.Executor, params *riverdriver.JobSetStateIfRunningManyParams) ([]*rivertype.JobRow, error) {
	deleted, n := p.deleted.take(params.ID)
	switch n {
	case 0:
		return p.StandardPilot.JobSetStateIfRunningMany(ctx, exec, params)
	case len(params.ID):
		return nil, nil // the rows are gone: nothing to complete, and no job to report
	}
	rows, err := p.StandardPilot.JobSetStateIfRunningMany(ctx, exec, withoutDeleted(params, deleted))
	if err != nil {
		p.deleted.putBack(params.ID, deleted)
	}
	return rows, err
}

// withoutDeleted returns the completions of params whose job is not
// marked in deleted.
func withoutDeleted(params *riverdriver.JobSetStateIfRunningManyParams, deleted []bool) *riverdriver.JobSetStateIfRunningManyParams {
	out := &riverdriver.JobSetStateIfRunningManyParams{Now: params.Now, Schema: params.Schema}
	for i, gone := range deleted {
		if gone {
			continue
		}
		out.ID = append(out.ID, params.ID[i])
		out.Attempt = append(out.Attempt, params.Attempt[i])
		out.ErrData = append(out.ErrData, params.ErrData[i])
		out.FinalizedAt = append(out.FinalizedAt, params.FinalizedAt[i])
		out.MetadataDoMerge = append(out.MetadataDoMerge, params.MetadataDoMerge[i])
		out.MetadataUpdates = append(out.MetadataUpdates, params.MetadataUpdates[i])
		out.ScheduledAt = append(out.ScheduledAt, params.ScheduledAt[i])
		out.State = append(out.State, params.State[i])
	}
	return out
}
