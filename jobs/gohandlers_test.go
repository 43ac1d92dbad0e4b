package jobs_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/ordoflow/ordo/jobs"
)

// TestCallWorkspace: under Handlers.Call a handler's workspace is a
// directory it can write to, gone once Call returns; a TaskContext made by
// hand has none and says so.
func TestCallWorkspace(t *testing.T) {
	var handlers jobs.Handlers
	var seen string
	handlers.Handle("save", func(ctx context.Context, tc jobs.TaskContext) (any, error) {
		ws, err := tc.Workspace()
		if err != nil {
			return nil, err
		}
		again, _ := tc.Workspace()
		if again != ws {
			return nil, errors.New("a second call gave another directory")
		}
		seen = ws
		return nil, os.WriteFile(filepath.Join(ws, "model.txt"), []byte("fitted"), 0o600)
	})
	if _, err := handlers.Call(t.Context(), "save", jobs.TaskContext{}); err != nil {
		t.Fatal(err)
	}
	if seen == "" {
		t.Fatal("the handler got no workspace")
	}
	if _, err := os.Stat(seen); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the workspace %s is still there after Call (%v)", seen, err)
	}
	if _, err := (jobs.TaskContext{}).Workspace(); err == nil {
		t.Error("a TaskContext made by hand gave a workspace")
	}
}

// TestCallOutputs: under Handlers.Call a handler can create outputs and
// record metrics (kept nowhere); its output directory is gone once Call
// returns, and OpenInput says there are no inputs.
func TestCallOutputs(t *testing.T) {
	var handlers jobs.Handlers
	var made string
	handlers.Handle("train", func(ctx context.Context, tc jobs.TaskContext) (any, error) {
		f, err := tc.CreateOutput("model/weights.bin")
		if err != nil {
			return nil, err
		}
		made = f.Name()
		tc.SetMetric("r2", 0.9)
		if _, err := tc.OpenInput("load", "data.csv"); err == nil {
			return nil, errors.New("an input opened under Call")
		}
		return nil, f.Close()
	})
	if _, err := handlers.Call(t.Context(), "train", jobs.TaskContext{}); err != nil {
		t.Fatal(err)
	}
	if made == "" {
		t.Fatal("no output made")
	}
	if _, err := os.Stat(made); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the output %s is still there after Call (%v)", made, err)
	}
	if _, err := (jobs.TaskContext{}).CreateOutput("x"); err == nil {
		t.Error("a TaskContext made by hand created an output")
	}
}
