package projections

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/domain"
)

// metricSource is one task run's metrics, with what orders it among its
// run's: the time it completed and the position of its creation.
type metricSource struct {
	endedAt time.Time
	created int64
	metrics map[string]float64
}

// unionMetrics is a flow run's metrics: the union of its task runs', a
// later completion winning a name two report (flowMetricsSQL does the same
// in PostgreSQL). Empty when none has metrics.
func unionMetrics(src []metricSource) map[string]float64 {
	slices.SortStableFunc(src, func(a, b metricSource) int {
		return cmp.Or(a.endedAt.Compare(b.endedAt), cmp.Compare(a.created, b.created))
	})
	out := map[string]float64{}
	for _, s := range src {
		maps.Copy(out, s.metrics)
	}
	return out
}

// deriveFlowMetrics sets the metrics of the batch's flow runs from its task
// runs: Replay's batch holds every task run of the log.
func (b *batch) deriveFlowMetrics() {
	byFlow := map[*flowRunRow][]metricSource{}
	for _, id := range b.taskOrder {
		t := b.tasks[id]
		if len(t.t.Metrics) == 0 || t.t.EndedAt == nil {
			continue
		}
		if f := b.flows[t.t.FlowRunID]; f != nil {
			byFlow[f] = append(byFlow[f], metricSource{endedAt: *t.t.EndedAt, created: t.position, metrics: t.t.Metrics})
		}
	}
	for f, src := range byFlow {
		f.metrics = unionMetrics(src)
	}
}

// RunOutput is one output of a flow run, as GET /runs/{id}/outputs lists
// it. DownloadURL is the API's to fill.
type RunOutput struct {
	TaskName    string    `json:"task_name"`
	TaskRunID   uuid.UUID `json:"task_run_id"`
	Name        string    `json:"name"`
	SHA256      string    `json:"sha256"`
	Size        int64     `json:"size"`
	MediaType   string    `json:"media_type"`
	DownloadURL string    `json:"download_url"`
}

// RunOutputs lists the outputs of a flow run's task runs, by task (in the
// flow's order) and name.
func (r *Reader) RunOutputs(ctx context.Context, runID uuid.UUID) ([]RunOutput, error) {
	rows, err := r.pool.Query(ctx, `
SELECT t.task_name, t.id, o.name, o.sha256, o.size, o.media_type
FROM flow_runs f
JOIN task_runs t ON t.flow_run_id = f.id AND t.outputs <> '[]'
CROSS JOIN LATERAL jsonb_to_recordset(t.outputs) AS o(name text, sha256 text, size bigint, media_type text)
WHERE f.id = $1
ORDER BY t.created_position, o.name`, runID)
	if err != nil {
		return nil, fmt.Errorf("list outputs: %w", err)
	}
	items := []RunOutput{}
	var o RunOutput
	if _, err := pgx.ForEachRow(rows, []any{&o.TaskName, &o.TaskRunID, &o.Name, &o.SHA256, &o.Size, &o.MediaType}, func() error {
		items = append(items, o)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list outputs: %w", err)
	}
	if len(items) == 0 {
		var exists bool
		if err := r.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM flow_runs WHERE id = $1)`, runID).Scan(&exists); err != nil {
			return nil, fmt.Errorf("get run: %w", err)
		}
		if !exists {
			return nil, domain.Errorf(domain.CodeNotFound, "flow run %s not found", runID)
		}
	}
	return items, nil
}

// TaskRunOutput returns one output of a task run by its name.
func (r *Reader) TaskRunOutput(ctx context.Context, taskRunID uuid.UUID, name string) (domain.Output, error) {
	var out []domain.Output
	err := r.pool.QueryRow(ctx, `
SELECT coalesce((SELECT jsonb_agg(o) FROM jsonb_array_elements(t.outputs) o WHERE o->>'name' = $2), '[]')
FROM task_runs t WHERE t.id = $1`, taskRunID, name).Scan(&out)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return domain.Output{}, domain.Errorf(domain.CodeNotFound, "task run %s not found", taskRunID)
	case err != nil:
		return domain.Output{}, fmt.Errorf("get output: %w", err)
	case len(out) == 0:
		return domain.Output{}, domain.Errorf(domain.CodeNotFound, "task run %s has no output named %q", taskRunID, name)
	}
	return out[0], nil
}

// MetricPoint is one run of a deployment's metric series.
type MetricPoint struct {
	RunID   uuid.UUID          `json:"run_id"`
	RunName string             `json:"run_name"`
	Time    time.Time          `json:"time"` // when the run was scheduled
	State   State              `json:"state"`
	Metrics map[string]float64 `json:"metrics"`
}

// Sizes of a metric series.
const (
	DefaultMetricPoints = 100
	MaxMetricPoints     = 1000
)

// DeploymentMetrics returns the metrics of a deployment's last limit runs
// that have any, oldest first (0: DefaultMetricPoints).
func (r *Reader) DeploymentMetrics(ctx context.Context, deploymentID uuid.UUID, limit int) (Page[MetricPoint], error) {
	switch {
	case limit == 0:
		limit = DefaultMetricPoints
	case limit < 0 || limit > MaxMetricPoints:
		return Page[MetricPoint]{}, domain.Invalid("limit", "must be between 1 and %d, got %d", MaxMetricPoints, limit)
	}
	rows, err := r.pool.Query(ctx, `
SELECT id, name, scheduled_at, state_type, state_name, state_timestamp, state_message, metrics
FROM flow_runs WHERE deployment_id = $1 AND metrics <> '{}'
ORDER BY scheduled_at DESC, id DESC LIMIT $2`, deploymentID, limit)
	if err != nil {
		return Page[MetricPoint]{}, fmt.Errorf("metric series: %w", err)
	}
	items := []MetricPoint{}
	var p MetricPoint
	if _, err := pgx.ForEachRow(rows, []any{&p.RunID, &p.RunName, &p.Time, &p.State.Type, &p.State.Name, &p.State.Timestamp, &p.State.Message, &p.Metrics}, func() error {
		items = append(items, p)
		p.Metrics = nil
		return nil
	}); err != nil {
		return Page[MetricPoint]{}, fmt.Errorf("metric series: %w", err)
	}
	if len(items) == 0 {
		var exists bool
		if err := r.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM deployments WHERE id = $1) OR EXISTS (SELECT 1 FROM flow_runs WHERE deployment_id = $1)`, deploymentID).Scan(&exists); err != nil {
			return Page[MetricPoint]{}, fmt.Errorf("get deployment: %w", err)
		}
		if !exists {
			return Page[MetricPoint]{}, domain.Errorf(domain.CodeNotFound, "deployment %s not found", deploymentID)
		}
	}
	slices.Reverse(items)
	return Page[MetricPoint]{Items: items}, nil
}
