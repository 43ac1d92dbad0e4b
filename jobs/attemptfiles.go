package jobs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/ordoflow/ordo/commands"
)

// Directories in WorkspaceDir beside the runs' workspaces (not run ids: the
// sweep leaves them alone): each attempt's ORDO_OUTPUT_DIR, and its
// ORDO_INPUT_DIR when it has input files.
const (
	outputsDirName = ".outputs"
	inputsDirName  = ".inputs"
	// emptyInputsName is the ORDO_INPUT_DIR of attempts without input
	// files: one empty read-only directory they share, so that the variable
	// always names a directory and such an attempt makes none.
	emptyInputsName = "empty"
)

// attemptFiles are the data plane's paths of one attempt. Each has a name
// of its own, made from the attempt's result path, so that two workers
// sharing the directories never meet.
type attemptFiles struct {
	outputDir   string
	inputDir    string
	metricsPath string
	ownInputs   bool   // inputDir was made for this attempt
	release     func() // releases the input blobs it holds in the cache
}

// dataDirs makes, once per worker, the directories attempts' directories
// go in.
func (w *Worker) dataDirs() error {
	if w.dataMade.Load() {
		return nil
	}
	w.dataMu.Lock()
	defer w.dataMu.Unlock()
	if w.dataMade.Load() {
		return nil
	}
	for _, d := range []string{outputsDirName, inputsDirName} {
		if err := os.MkdirAll(filepath.Join(w.opts.WorkspaceDir, d), 0o700); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	empty := filepath.Join(w.opts.WorkspaceDir, inputsDirName, emptyInputsName)
	if err := os.Mkdir(empty, 0o555); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create the empty ORDO_INPUT_DIR: %w", err)
	}
	w.dataMade.Store(true)
	return nil
}

// commandFiles prepares a command attempt's files: an empty output
// directory (one mkdir), its inputs materialized when it has any, and the
// metrics path beside its result path (nothing made).
func (w *Worker) commandFiles(ctx context.Context, p commands.Plan, resultPath string) (attemptFiles, error) {
	f := attemptFiles{release: func() {}}
	if err := w.dataDirs(); err != nil {
		return f, err
	}
	base := strings.TrimSuffix(filepath.Base(resultPath), ".json")
	f.metricsPath = strings.TrimSuffix(resultPath, ".json") + ".metrics.json"
	f.outputDir = filepath.Join(w.opts.WorkspaceDir, outputsDirName, base)
	if err := os.Mkdir(f.outputDir, 0o700); err != nil {
		return f, fmt.Errorf("create ORDO_OUTPUT_DIR: %w", err)
	}
	f.inputDir = filepath.Join(w.opts.WorkspaceDir, inputsDirName, emptyInputsName)
	if len(p.InputFiles) == 0 {
		return f, nil
	}
	f.inputDir, f.ownInputs = filepath.Join(w.opts.WorkspaceDir, inputsDirName, base), true
	if err := os.Mkdir(f.inputDir, 0o700); err != nil {
		return f, fmt.Errorf("create ORDO_INPUT_DIR: %w", err)
	}
	var err error
	f.release, err = w.materializeInputs(ctx, p.InputFiles, f.inputDir)
	return f, err
}

// remove removes what the attempt left: its output directory (one rmdir
// when empty), its input directory and metrics file, and releases its
// input blobs.
func (f attemptFiles) remove() {
	if f.outputDir != "" {
		if err := os.Remove(f.outputDir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			_ = removeTree(f.outputDir)
		}
	}
	if f.ownInputs {
		_ = removeTree(f.inputDir)
	}
	if f.metricsPath != "" {
		_ = os.Remove(f.metricsPath)
	}
	if f.release != nil {
		f.release()
	}
}
