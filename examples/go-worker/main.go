// Command go-worker is an Ordo worker built by its user: a small pipeline
// whose tasks are Go functions instead of commands. It fits a line to noisy
// points and reports how well it fits, in three handler tasks:
//
//	generate  makes the data set (points of y = slope·x + intercept + noise)
//	fit       least-squares fit of a line to the points (generate's result)
//	evaluate  RMSE and R² of the fitted line (the run's result)
//
// Build and run it next to an Ordo server (see README.md here):
//
//	go build -o go-worker ./examples/go-worker
//	ORDO_DATABASE_URL=postgres://... ./go-worker -q go
//	ordo deploy -f examples/go-worker/deployment.yaml
//	ordo run line_fit --watch
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/jobs"
)

// point is one sample of the data set.
type point struct{ X, Y float64 }

// line is a fitted model.
type line struct {
	Slope     float64 `json:"slope"`
	Intercept float64 `json:"intercept"`
}

// pipeline registers the example's handlers. Each takes what it needs from
// the run's parameters and from its upstream tasks' results (tc.Inputs).
func pipeline() *jobs.Handlers {
	var h jobs.Handlers
	h.Handle("generate", func(ctx context.Context, tc jobs.TaskContext) (any, error) {
		n := intParam(tc.Parameters, "points", 1000)
		if n < 2 {
			return nil, fmt.Errorf("parameter points: need at least 2, got %d", n)
		}
		rng := rand.New(rand.NewPCG(uint64(intParam(tc.Parameters, "seed", 1)), 7))
		slope, intercept := floatParam(tc.Parameters, "slope", 3), floatParam(tc.Parameters, "intercept", 2)
		pts := make([]point, n)
		for i := range pts {
			x := rng.Float64() * 10
			pts[i] = point{X: x, Y: slope*x + intercept + rng.NormFloat64()}
		}
		tc.Logger.Info("generated points", "points", n, "slope", slope, "intercept", intercept)
		return pts, nil
	})
	h.Handle("fit", func(ctx context.Context, tc jobs.TaskContext) (any, error) {
		var pts []point
		if err := json.Unmarshal(tc.Inputs["generate"], &pts); err != nil {
			return nil, fmt.Errorf("read generate's points: %w", err)
		}
		var sx, sy, sxx, sxy float64
		for _, p := range pts {
			sx, sy, sxx, sxy = sx+p.X, sy+p.Y, sxx+p.X*p.X, sxy+p.X*p.Y
		}
		n := float64(len(pts))
		den := n*sxx - sx*sx
		if den == 0 {
			return nil, errors.New("all points have the same x: no line fits")
		}
		m := line{Slope: (n*sxy - sx*sy) / den}
		m.Intercept = (sy - m.Slope*sx) / n
		tc.Logger.Info("fitted a line", "slope", m.Slope, "intercept", m.Intercept)
		return m, nil
	})
	h.Handle("evaluate", func(ctx context.Context, tc jobs.TaskContext) (any, error) {
		var pts []point
		var m line
		if err := json.Unmarshal(tc.Inputs["generate"], &pts); err != nil {
			return nil, fmt.Errorf("read generate's points: %w", err)
		}
		if err := json.Unmarshal(tc.Inputs["fit"], &m); err != nil {
			return nil, fmt.Errorf("read fit's line: %w", err)
		}
		var mean, ssRes, ssTot float64
		for _, p := range pts {
			mean += p.Y / float64(len(pts))
		}
		for _, p := range pts {
			d := p.Y - (m.Slope*p.X + m.Intercept)
			ssRes += d * d
			ssTot += (p.Y - mean) * (p.Y - mean)
		}
		rmse, r2 := math.Sqrt(ssRes/float64(len(pts))), 1-ssRes/ssTot
		tc.Logger.Info("evaluated the line", "rmse", rmse, "r2", r2)
		return map[string]float64{"rmse": rmse, "r2": r2, "slope": m.Slope, "intercept": m.Intercept}, nil
	})
	return &h
}

func intParam(p map[string]any, name string, def int) int {
	if v, ok := p[name].(float64); ok {
		return int(v)
	}
	return def
}

func floatParam(p map[string]any, name string, def float64) float64 {
	if v, ok := p[name].(float64); ok {
		return v
	}
	return def
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "go-worker:", err)
		os.Exit(1)
	}
}

func run() error {
	var queues string
	var concurrency int
	var grace time.Duration
	flag.StringVar(&queues, "q", "go", "work queues to take task runs from, separated by commas")
	flag.IntVar(&concurrency, "concurrency", 4, "task runs run at once per queue")
	flag.DurationVar(&grace, "shutdown-grace", 30*time.Second, "on SIGTERM, how long running tasks may take to finish")
	flag.Parse()
	url := os.Getenv("ORDO_DATABASE_URL")
	if url == "" {
		url = os.Getenv("DATABASE_URL")
	}
	if url == "" {
		return errors.New("set ORDO_DATABASE_URL (or DATABASE_URL) to the database of your Ordo server")
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))

	// The worker stops taking work on SIGTERM or Ctrl-C, lets running task
	// runs finish within the grace period, and hands the rest back.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	pool, err := eventstore.NewPool(ctx, url)
	if err != nil {
		return fmt.Errorf("database URL: %w", err)
	}
	defer pool.Close()
	store := eventstore.New(pool, domain.NewRegistry())
	defer store.Close()
	w, err := jobs.NewWorker(pool, store, jobs.WorkerOptions{
		Queues:      strings.Split(queues, ","),
		Concurrency: concurrency,
		Handlers:    pipeline(),
		// where each flow run gets a workspace directory (default under $TMPDIR)
		WorkspaceDir: os.Getenv("ORDO_WORKSPACE_DIR"),
		Logger:       logger,
	})
	if err != nil {
		return err
	}
	if err := w.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	logger.Info("go-worker started", "name", w.Name(), "queues", queues)
	<-ctx.Done()
	stopCtx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	return w.Stop(stopCtx)
}
