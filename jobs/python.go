package jobs

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
)

// isPython reports whether a command task's argv[0] names Python the
// portable way, which WorkerOptions.Python then decides.
func isPython(argv0 string) bool { return argv0 == "python3" || argv0 == "python" }

// commandPath is the program a command task's argv[0] runs: the worker's
// Python interpreter for python3 and python when one is set, so that a
// deployment keeps saying python3 while each worker names the interpreter
// that has the tasks' libraries; otherwise argv[0] itself, looked up on
// the worker's PATH.
func (w *Worker) commandPath(argv0 string) string {
	if w.opts.Python != "" && isPython(argv0) {
		return w.opts.Python
	}
	return argv0
}

// ResolvePython returns the absolute path of the interpreter that a setting
// such as ORDO_PYTHON names: a path, or a command looked up on PATH. An
// empty setting resolves to "" (tasks' python3 is looked up on PATH).
func ResolvePython(setting string) (string, error) {
	if setting == "" {
		return "", nil
	}
	p, err := exec.LookPath(setting)
	if err != nil {
		var ee *exec.Error
		if errors.As(err, &ee) {
			err = ee.Err
		}
		return "", fmt.Errorf("interpreter %q: %w", setting, err)
	}
	return filepath.Abs(p)
}
