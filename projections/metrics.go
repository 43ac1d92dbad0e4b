package projections

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/riverjob"
)

// readModelCollector reads gauges from the database when metrics are
// scraped: flow runs by state (from the read model), and per work queue the
// task runs waiting and running (River's jobs) and the workers online.
type readModelCollector struct{ pool *pgxpool.Pool }

var (
	runsDesc    = prometheus.NewDesc("ordo_flow_runs", "Flow runs by current state type, from the read model.", []string{"state"}, nil)
	depthDesc   = prometheus.NewDesc("ordo_work_queue_depth", "Task runs due and waiting for a worker, by work queue.", []string{"queue"}, nil)
	runningDesc = prometheus.NewDesc("ordo_work_queue_running", "Task runs running, by work queue.", []string{"queue"}, nil)
	workersDesc = prometheus.NewDesc("ordo_workers_online", "Workers online (a heartbeat in the last 30 s), by work queue they take from.", []string{"queue"}, nil)
)

func (readModelCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- runsDesc
	ch <- depthDesc
	ch <- runningDesc
	ch <- workersDesc
}

func (c readModelCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	counts := map[string]int64{}
	rows, err := c.pool.Query(ctx, `SELECT state_type, count(*) FROM flow_runs GROUP BY state_type`)
	if err == nil {
		for rows.Next() {
			var s string
			var n int64
			if err = rows.Scan(&s, &n); err != nil {
				break
			}
			counts[s] = n
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	if err != nil {
		ch <- prometheus.NewInvalidMetric(runsDesc, err)
	} else {
		for _, s := range domain.StateTypes { // every state, zeros too
			ch <- prometheus.MustNewConstMetric(runsDesc, prometheus.GaugeValue, float64(counts[string(s)]), string(s))
		}
	}

	rows, err = c.pool.Query(ctx, `
WITH jobs AS (
    `+riverjob.CountsByQueueSQL+`
), workers AS (
    SELECT q AS queue, count(*) AS online FROM worker_status, unnest(queues) q WHERE online GROUP BY q
)
SELECT coalesce(j.queue, w.queue), coalesce(j.depth, 0), coalesce(j.running, 0), coalesce(w.online, 0)
FROM jobs j FULL JOIN workers w ON w.queue = j.queue`)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(depthDesc, err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var q string
		var depth, running, online int64
		if err := rows.Scan(&q, &depth, &running, &online); err != nil {
			ch <- prometheus.NewInvalidMetric(depthDesc, err)
			return
		}
		ch <- prometheus.MustNewConstMetric(depthDesc, prometheus.GaugeValue, float64(depth), q)
		ch <- prometheus.MustNewConstMetric(runningDesc, prometheus.GaugeValue, float64(running), q)
		ch <- prometheus.MustNewConstMetric(workersDesc, prometheus.GaugeValue, float64(online), q)
	}
	if err := rows.Err(); err != nil {
		ch <- prometheus.NewInvalidMetric(depthDesc, err)
	}
}
