package riverjob_test

import (
	"encoding/json"
	"testing"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/internal/pgtest"
	"github.com/ordoflow/ordo/riverjob"
)

// TestTaskRunArgsDecodeAsJSONDoes: args as PostgreSQL prints them decode to
// what was stored, an attempt's by the direct reader and any other shape
// as JSON; near misses of the attempt's shape are left to JSON too.
func TestTaskRunArgsDecodeAsJSONDoes(t *testing.T) {
	pool := pgtest.Pool(t)
	id := func() uuid.UUID { return uuid.Must(uuid.NewV7()) }
	for _, c := range []struct {
		args   riverjob.TaskRunArgs
		direct bool
	}{
		{riverjob.TaskRunArgs{TaskRunID: id(), FlowRunID: id(), Attempt: 1}, true},
		{riverjob.TaskRunArgs{TaskRunID: id(), FlowRunID: id(), Attempt: 123456789}, true},
		{riverjob.TaskRunArgs{TaskRunID: id(), FlowRunID: id(), Attempt: 1234567890}, false},
		{riverjob.TaskRunArgs{TaskRunID: id(), FlowRunID: id(), Attempt: 0}, false},
		{riverjob.TaskRunArgs{TaskRunID: id(), FlowRunID: id(), Attempt: -2}, false},
		{riverjob.TaskRunArgs{TaskRunID: id(), FlowRunID: id(), Attempt: 2, ChildFlowRunID: id()}, false},
		{riverjob.TaskRunArgs{TaskRunID: id(), FlowRunID: id(), Attempt: 3, ChildFlowRunID: id(), ChildCancelReason: "limit"}, false},
	} {
		stored, err := json.Marshal(c.args)
		if err != nil {
			t.Fatal(err)
		}
		var printed []byte
		if err := pool.QueryRow(t.Context(), `SELECT $1::jsonb::text`, string(stored)).Scan(&printed); err != nil {
			t.Fatal(err)
		}
		var got riverjob.TaskRunArgs
		if err := json.Unmarshal(printed, &got); err != nil || got != c.args {
			t.Errorf("%s decoded to %+v (%v), want %+v", printed, got, err, c.args)
		}
		if _, direct := riverjob.AttemptArgs(printed); direct != c.direct {
			t.Errorf("%s read directly: %v, want %v", printed, direct, c.direct)
		}
	}
	const good = "01936f0e-7b2a-7c3d-8e4f-5a6b7c8d9e0f"
	for doc, wantErr := range map[string]bool{
		`{"attempt": 1, "flow_run_id": "not-a-uuid-not-a-uuid-not-a-uuid-xx", "task_run_id": "` + good + `"}`: true,
		`{"attempt": 1x, "flow_run_id": "` + good + `", "task_run_id": "` + good + `"}`:                       true,
		`{"attempt": 1, "flow_run_id": "` + good + `", "task_run_ix": "` + good + `"}`:                        false,
	} {
		if _, direct := riverjob.AttemptArgs([]byte(doc)); direct {
			t.Errorf("%s read directly", doc)
		}
		var args riverjob.TaskRunArgs
		err := json.Unmarshal([]byte(doc), &args)
		if (err != nil) != wantErr || (err == nil && args.TaskRunID != uuid.Nil) {
			t.Errorf("%s decoded to %+v, %v; want an error: %v", doc, args, err, wantErr)
		}
	}
}
