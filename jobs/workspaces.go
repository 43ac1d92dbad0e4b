package jobs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/ordoflow/ordo/commands"
)

// DefaultWorkspaceRetention is how long a worker keeps a flow run's
// workspace after the run ended.
const DefaultWorkspaceRetention = 24 * time.Hour

// sweepInterval is how often a worker looks for workspaces to remove:
// a quarter of the retention, between a second and an hour.
func (o *WorkerOptions) sweepInterval() time.Duration {
	if o.workspaceSweep > 0 {
		return o.workspaceSweep
	}
	return min(max(o.WorkspaceRetention/4, time.Second), time.Hour)
}

// sweepWorkspaces removes, every sweep interval, the workspaces of flow
// runs that ended longer than WorkspaceRetention ago.
func (w *Worker) sweepWorkspaces() {
	if w.opts.WorkspaceRetention < 0 {
		return
	}
	t := time.NewTicker(w.opts.sweepInterval())
	defer t.Stop()
	for {
		if n, err := w.removeEndedWorkspaces(w.ctx); err != nil && w.ctx.Err() == nil {
			w.opts.Logger.Warn("could not remove the workspaces of ended runs", "dir", w.opts.WorkspaceDir, "err", err)
		} else if n > 0 {
			w.opts.Logger.Info("removed the workspaces of ended runs", "dir", w.opts.WorkspaceDir, "removed", n, "retention", w.opts.WorkspaceRetention.String())
		}
		select {
		case <-w.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// removeEndedWorkspaces removes the workspaces (the directories named by
// a flow run id in WorkspaceDir) of the runs whose last event ended them
// longer than WorkspaceRetention ago and of which this worker runs no
// attempt. A run retried later gets a new, empty workspace. Directories of
// runs the log does not have, or not named by a run id, are left alone.
func (w *Worker) removeEndedWorkspaces(ctx context.Context) (int, error) {
	entries, err := os.ReadDir(w.opts.WorkspaceDir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var ids []uuid.UUID
	for _, e := range entries {
		if id, err := uuid.Parse(e.Name()); err == nil && e.IsDir() && id.String() == e.Name() {
			ids = append(ids, id)
		}
		if strings.HasPrefix(e.Name(), removingPrefix) { // an earlier removal did not finish
			if err := os.RemoveAll(filepath.Join(w.opts.WorkspaceDir, e.Name())); err != nil {
				return 0, err
			}
		}
	}
	removed := 0
	for len(ids) > 0 {
		batch := ids[:min(len(ids), 1000)]
		ids = ids[len(batch):]
		last, err := w.store.LastEvents(ctx, w.pool, batch)
		if err != nil {
			return removed, err
		}
		for _, id := range batch {
			ev, ok := last[id]
			if !ok || !slices.Contains(commands.TerminalEventTypes, ev.Type) || time.Since(ev.RecordedAt) < w.opts.WorkspaceRetention {
				continue
			}
			gone, err := w.removeWorkspace(id)
			if err != nil {
				return removed, err
			}
			if gone {
				removed++
			}
		}
	}
	return removed, nil
}

// removingPrefix names a workspace being removed.
const removingPrefix = ".removing-"

// removeWorkspace removes a flow run's workspace unless an attempt of the
// run runs here, and reports whether it did. The directory is first
// renamed, under the lock that workspace takes, so that an attempt that
// starts meanwhile makes a new one rather than finding it half removed.
func (w *Worker) removeWorkspace(id uuid.UUID) (bool, error) {
	dir := filepath.Join(w.opts.WorkspaceDir, id.String())
	trash := filepath.Join(w.opts.WorkspaceDir, removingPrefix+id.String())
	w.wsMu.Lock()
	if w.running.has(id) {
		w.wsMu.Unlock()
		return false, nil
	}
	delete(w.workspaces, id)
	err := os.Rename(dir, trash)
	w.wsMu.Unlock()
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, os.RemoveAll(trash)
}

// resultsDirName is the directory in WorkspaceDir where command tasks write
// their results (ORDO_RESULT_PATH), a file for each attempt. Not a run id,
// the sweep leaves it alone.
const resultsDirName = ".results"

// madeResultDirs are the workers (by id) that have made their results
// directory.
var madeResultDirs sync.Map

// resultPath returns the file where an attempt may write its result, in a
// directory a worker makes once: a directory made and removed for each
// attempt was a good part of the cost of a quick command.
func (w *Worker) resultPath(p commands.Plan) (string, error) {
	dir := filepath.Join(w.opts.WorkspaceDir, resultsDirName)
	if _, made := madeResultDirs.Load(w.id); !made {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", fmt.Errorf("create result directory: %w", err)
		}
		madeResultDirs.Store(w.id, true)
	}
	// the random part keeps apart two workers that share the directory and
	// were both handed the attempt (one of them declared dead)
	return filepath.Join(dir, fmt.Sprintf("%s-%d-%016x.json", p.TaskRunID, p.Attempt, rand.Uint64())), nil
}
