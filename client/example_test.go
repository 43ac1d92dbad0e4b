package client_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/ordoflow/ordo/client"
)

// Deploy a flow, start a run of it and wait until it ends.
func Example() {
	ctx := context.Background()
	api, err := client.NewClientWithResponses(serverURL) // such as http://127.0.0.1:4200
	if err != nil {
		log.Fatal(err)
	}
	// with API tokens: client.WithRequestEditorFn(...) setting "Authorization: Bearer TOKEN"

	deployed, err := api.DeploymentSaveWithResponse(ctx, nil, client.DeploymentSpec{
		"name":       "hello",
		"work_queue": "example",
		"parameters": map[string]any{"who": "world"},
		"flow": map[string]any{"name": "hello", "tasks": []any{
			// a command task's result is the JSON it writes to ORDO_RESULT_PATH: here its parameters
			map[string]any{"name": "greet", "command": []string{"sh", "-c", `echo "$ORDO_PARAMETERS" > "$ORDO_RESULT_PATH"`}},
		}},
	})
	if err != nil {
		log.Fatal(err)
	}
	if deployed.JSON201 == nil {
		log.Fatalf("deploy: %s %s", deployed.Status(), deployed.Body)
	}

	params := map[string]any{"who": "Ordo"}
	started, err := api.RunCreateWithResponse(ctx, deployed.JSON201.ID.String(), nil, client.RunCreateJSONRequestBody{Parameters: &params})
	if err != nil {
		log.Fatal(err)
	}
	if started.JSON201 == nil {
		log.Fatalf("start: %s %s", started.Status(), started.Body)
	}

	for {
		run, err := api.RunGetWithResponse(ctx, started.JSON201.ID)
		if err != nil {
			log.Fatal(err)
		}
		if run.JSON200 == nil {
			log.Fatalf("read the run: %s %s", run.Status(), run.Body)
		}
		if r := run.JSON200; r.State.Type.Terminal() {
			fmt.Println(r.State.Type, "after", len(r.TaskRuns), "task run")
			fmt.Println(string(r.TaskRuns[0].Result))
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Output:
	// COMPLETED after 1 task run
	// {"who":"Ordo"}
}
