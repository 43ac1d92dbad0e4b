package jobs

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/rivertype"
)

// completionsExec records the completions that reach PostgreSQL.
type completionsExec struct {
	riverdriver.Executor // any other call panics
	got                  []*riverdriver.JobSetStateIfRunningManyParams
	fail                 int // how many of the next calls fail
}

func (e *completionsExec) JobSetStateIfRunningMany(_ context.Context, p *riverdriver.JobSetStateIfRunningManyParams) ([]*rivertype.JobRow, error) {
	e.got = append(e.got, p)
	if e.fail > 0 {
		e.fail--
		return nil, errors.New("connection refused")
	}
	return nil, nil
}

// completions are n completions whose every field tells which job it is of.
func completions(ids ...int64) *riverdriver.JobSetStateIfRunningManyParams {
	now := time.Unix(1, 0)
	p := &riverdriver.JobSetStateIfRunningManyParams{Now: &now, Schema: "s"}
	for _, id := range ids {
		attempt, at, sched := int(id), time.Unix(id, 0), time.Unix(-id, 0)
		p.ID = append(p.ID, id)
		p.Attempt = append(p.Attempt, &attempt)
		p.ErrData = append(p.ErrData, []byte{byte(id)})
		p.FinalizedAt = append(p.FinalizedAt, &at)
		p.MetadataDoMerge = append(p.MetadataDoMerge, id%2 == 0)
		p.MetadataUpdates = append(p.MetadataUpdates, []byte{byte(id), 1})
		p.ScheduledAt = append(p.ScheduledAt, &sched)
		p.State = append(p.State, rivertype.JobState([]string{"completed", "retryable", "cancelled"}[id%3]))
	}
	return p
}

func TestWorkerPilotLeavesOutDeletedJobs(t *testing.T) {
	deleted := &deletedJobs{}
	pilot := &workerPilot{deleted: deleted}
	exec := &completionsExec{}
	deleted.add([]int64{2, 4, 9})

	if _, err := pilot.JobSetStateIfRunningMany(t.Context(), exec, completions(1, 2, 3, 4, 5)); err != nil {
		t.Fatal(err)
	}
	if len(exec.got) != 1 || !reflect.DeepEqual(exec.got[0], completions(1, 3, 5)) {
		t.Fatalf("completions sent: %+v, want those of jobs 1, 3 and 5, field for field", exec.got)
	}
	// A batch of deleted jobs only sends nothing; an id is left out once.
	if _, err := pilot.JobSetStateIfRunningMany(t.Context(), exec, completions(9)); err != nil || len(exec.got) != 1 {
		t.Fatalf("a batch of deleted jobs sent %d statements (err %v), want none", len(exec.got)-1, err)
	}
	if _, err := pilot.JobSetStateIfRunningMany(t.Context(), exec, completions(2, 6)); err != nil {
		t.Fatal(err)
	}
	if len(exec.got) != 2 || !slices.Equal(exec.got[1].ID, []int64{2, 6}) {
		t.Fatalf("second completion of job 2 was left out: %+v", exec.got)
	}
	if len(deleted.ids) != 0 || deleted.leftOut != 3 {
		t.Errorf("pending %v, left out %d; want none pending and 3 left out", deleted.ids, deleted.leftOut)
	}
}

// TestWorkerPilotLeavesOutDeletedJobsOnRetry: River sends a completion
// whose statement failed again with the same ids, and a deleted job is left
// out of every try (sent late, after a failover to an asynchronous standby
// lost the deletion, it would mark the job completed).
func TestWorkerPilotLeavesOutDeletedJobsOnRetry(t *testing.T) {
	deleted := &deletedJobs{}
	pilot := &workerPilot{deleted: deleted}
	exec := &completionsExec{fail: 2}
	deleted.add([]int64{2})
	for try := range 3 {
		_, err := pilot.JobSetStateIfRunningMany(t.Context(), exec, completions(1, 2))
		if (err != nil) != (try < 2) {
			t.Fatalf("try %d: err %v", try, err)
		}
	}
	for i, p := range exec.got {
		if !slices.Equal(p.ID, []int64{1}) {
			t.Errorf("try %d sent the completions of jobs %v, want job 1's only", i, p.ID)
		}
	}
	if len(exec.got) != 3 || len(deleted.ids) != 0 || deleted.leftOut != 1 {
		t.Errorf("%d statements, pending %v, left out %d; want 3, none pending and 1 left out", len(exec.got), deleted.ids, deleted.leftOut)
	}
}

// TestPilotParamsFields fails when River's completion parameters gain or
// lose a field, which withoutDeleted would then not carry over.
func TestPilotParamsFields(t *testing.T) {
	var fields []string
	for f := range reflect.TypeFor[riverdriver.JobSetStateIfRunningManyParams]().Fields() {
		fields = append(fields, f.Name)
	}
	want := []string{"ID", "Attempt", "ErrData", "FinalizedAt", "MetadataDoMerge", "MetadataUpdates", "Now", "ScheduledAt", "Schema", "State"}
	if !slices.Equal(fields, want) {
		t.Errorf("River's JobSetStateIfRunningManyParams has fields %v; withoutDeleted handles %v", fields, want)
	}
}
