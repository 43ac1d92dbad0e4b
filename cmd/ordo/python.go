package main

import (
	"context"
	"log/slog"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ordoflow/ordo/jobs"
)

// exampleModules are what the example ML pipeline imports; `ordo dev`
// looks for an interpreter that has them, as scripts/ml-python does.
var exampleModules = []string{"sklearn", "pandas", "psycopg2"}

// fallbackPython is where Debian's packages (scripts/install-deps ml)
// put the interpreter that has the example's libraries.
const fallbackPython = "/usr/bin/python3"

// devPython chooses the interpreter of `ordo dev`'s worker: the one --python
// (ORDO_PYTHON) names, else the first of python3 on PATH and
// /usr/bin/python3 that imports the example's libraries, else PATH's
// python3. It says which one it checked, and warns when PATH's python3 is
// not the one tasks get. onPath is python3 as PATH finds it (pathPython).
func devPython(ctx context.Context, setting, onPath string, logger *slog.Logger) (string, error) {
	libs := strings.Join(exampleModules, ", ")
	if setting != "" {
		p, err := jobs.ResolvePython(setting)
		if err != nil {
			return "", err
		}
		if err := hasModules(ctx, p); err != nil {
			logger.Warn("ORDO_PYTHON lacks the example pipeline's libraries: its tasks will fail (scripts/install-deps ml)", "python", p, "needs", libs, "error", err.Error())
		} else {
			logger.Info("python for command tasks: ORDO_PYTHON", "python", p, "has", libs)
		}
		return p, nil
	}
	var checked []string
	for _, cand := range []string{onPath, fallbackPython} {
		if cand == "" || slices.Contains(checked, cand) {
			continue
		}
		checked = append(checked, cand)
		if hasModules(ctx, cand) != nil {
			continue
		}
		if cand != onPath {
			logger.Warn("python3 on PATH lacks the example pipeline's libraries: tasks that run python3 get another interpreter (set ORDO_PYTHON to choose)",
				"path_python3", orNone(onPath), "python", cand, "has", libs)
		} else {
			logger.Info("python for command tasks: python3 on PATH", "python", cand, "has", libs)
		}
		return cand, nil
	}
	logger.Warn("no python3 with the example pipeline's libraries: its tasks will fail until scripts/install-deps ml installs them (or ORDO_PYTHON names one)",
		"checked", strings.Join(checked, ", "), "needs", libs)
	return "", nil
}

// pathPython is the absolute path of python3 as PATH finds it, or "".
func pathPython() string {
	p, err := exec.LookPath("python3")
	if err != nil {
		return ""
	}
	abs, _ := filepath.Abs(p)
	return abs
}

// hasModules fails unless python imports exampleModules.
func hasModules(ctx context.Context, python string) error {
	out, err := exec.CommandContext(ctx, python, "-c", "import "+strings.Join(exampleModules, ", ")).CombinedOutput()
	if err != nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		return &pythonError{err: err, last: lines[len(lines)-1]}
	}
	return nil
}

type pythonError struct {
	err  error
	last string
}

func (e *pythonError) Error() string { return e.err.Error() + ": " + e.last }

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
