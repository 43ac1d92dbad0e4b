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
