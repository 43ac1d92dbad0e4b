package jobs_test

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/ordoflow/ordo/jobs"
)

// A worker binary registers its Go handlers by name; tasks with
// `handler: train` then run them. Call runs one as the worker would, which
// is how a handler is tested without a database.
func ExampleHandlers() {
	var handlers jobs.Handlers
	handlers.Handle("train", func(ctx context.Context, tc jobs.TaskContext) (any, error) {
		var rows int
		if err := json.Unmarshal(tc.Inputs["load_data"], &rows); err != nil {
			return nil, err
		}
		tc.Logger.Info("training", "rows", rows, "depth", tc.Parameters["max_depth"])
		return map[string]any{"rows": rows, "rmse": 0.42}, nil
	})

	// In the worker binary's main:
	//
	//	w, err := jobs.NewWorker(pool, store, jobs.WorkerOptions{Queues: []string{"ml"}, Handlers: &handlers})
	//	...
	//	err = w.Start(ctx)
	//	defer w.Stop(ctx)

	result, err := handlers.Call(context.Background(), "train", jobs.TaskContext{
		Parameters: map[string]any{"max_depth": 6},
		Inputs:     map[string]json.RawMessage{"load_data": json.RawMessage(`1000`)},
	})
	fmt.Println(string(result), err)
	_, err = handlers.Call(context.Background(), "evaluate", jobs.TaskContext{})
	fmt.Println(err)
	// Output:
	// {"rmse":0.42,"rows":1000} <nil>
	// no handler evaluate registered on this worker
}
