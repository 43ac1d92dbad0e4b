package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/riverjob"
)

// WorkQueue is a work queue as the API shows it.
type WorkQueue struct {
	Name             string        `json:"name"`
	Depth            int64         `json:"depth"`     // task runs due and waiting for a worker
	Scheduled        int64         `json:"scheduled"` // task runs queued for later (retry delays, scheduled runs)
	Running          int64         `json:"running"`
	Paused           bool          `json:"paused"`
	PausedAt         *time.Time    `json:"paused_at"`
	ConcurrencyLimit *int          `json:"concurrency_limit"`
	SlotsInUse       *int64        `json:"slots_in_use"`     // with a limit: slots of task runs running or woken to run
	WaitingForSlot   int64         `json:"waiting_for_slot"` // task runs due that wait for a slot of the limit
	WorkersOnline    int           `json:"workers_online"`
	Workers          []QueueWorker `json:"workers"`
	CreatedAt        *time.Time    `json:"created_at"` // when its settings were first saved; nil without settings
	UpdatedAt        *time.Time    `json:"updated_at"`
}

// QueueWorker is an online worker that takes task runs from a queue.
type QueueWorker struct {
	Name            string    `json:"name"`
	Hostname        string    `json:"hostname"`
	Queues          []string  `json:"queues"`
	StartedAt       time.Time `json:"started_at"`
	LastHeartbeatAt time.Time `json:"last_heartbeat_at"`
	Running         int64     `json:"running"` // task runs it runs now, on any of its queues
}

// WorkQueueFilter selects work queues; they are listed by name.
type WorkQueueFilter struct {
	Limit  int    // 1..200; 0 means 50
	Cursor string // next_cursor of the previous page
}

// workQueueSQL lists work queues by name after $1, at most $2: every queue
// that has settings, that River knows, that a deployment sends runs to or
// that an online worker takes from.
var workQueueSQL = `
WITH names AS (
    SELECT name FROM work_queues
    UNION SELECT name FROM river_queue
    UNION SELECT work_queue FROM deployments
    UNION SELECT unnest(queues) FROM worker_status WHERE online
), page AS (
    SELECT name FROM names WHERE name > $1 AND ($3 = '' OR name = $3) ORDER BY name LIMIT $2
)
SELECT p.name, c.ready, c.later, c.running,
    q.paused_at, w.concurrency_limit, w.created_at, w.updated_at,
    CASE WHEN w.concurrency_limit IS NOT NULL THEN work_queue_slots_in_use(p.name, w.updated_at, '{}') END,
    (SELECT count(*) FROM work_queue_slots s WHERE s.queue = p.name AND s.state = 'waiting'),
    coalesce((SELECT json_agg(json_build_object(
            'name', s.name, 'hostname', s.hostname, 'queues', s.queues, 'started_at', s.started_at,
            'last_heartbeat_at', s.last_heartbeat_at,
            'running', (SELECT count(*) FROM task_run_attempts a WHERE a.worker = s.name AND a.outcome = 'running'))
        ORDER BY s.name, s.started_at)
        FROM worker_status s WHERE s.online AND p.name = ANY (s.queues)), '[]')
FROM page p
CROSS JOIN LATERAL (` + riverjob.QueueCountsSQL("p.name") + `) c
LEFT JOIN work_queues w ON w.name = p.name
LEFT JOIN river_queue q ON q.name = p.name
ORDER BY p.name`

// WorkQueueList lists work queues by name, with their depth, running task
// runs, whether they are paused, their concurrency limit and online workers.
func (r *Reader) WorkQueueList(ctx context.Context, f WorkQueueFilter) (Page[WorkQueue], error) {
	limit, err := pageSize(f.Limit)
	if err != nil {
		return Page[WorkQueue]{}, err
	}
	after := ""
	if f.Cursor != "" {
		name, _, err := decodeCursor(f.Cursor)
		if err != nil {
			return Page[WorkQueue]{}, err
		}
		after = name
	}
	items, err := r.workQueues(ctx, after, limit+1, "")
	if err != nil {
		return Page[WorkQueue]{}, err
	}
	page := Page[WorkQueue]{Items: items}
	if len(items) > limit {
		page.Items = items[:limit]
		c := encodeCursor(items[limit-1].Name, [16]byte{})
		page.NextCursor = &c
	}
	return page, nil
}

// WorkQueueGet returns one work queue.
func (r *Reader) WorkQueueGet(ctx context.Context, name string) (WorkQueue, error) {
	items, err := r.workQueues(ctx, "", 1, name)
	if err != nil {
		return WorkQueue{}, err
	}
	if len(items) == 0 {
		return WorkQueue{}, domain.Errorf(domain.CodeNotFound, "work queue %q not found", name)
	}
	return items[0], nil
}

func (r *Reader) workQueues(ctx context.Context, after string, limit int, only string) ([]WorkQueue, error) {
	rows, err := r.pool.Query(ctx, workQueueSQL, after, limit, only)
	if err != nil {
		return nil, fmt.Errorf("list work queues: %w", err)
	}
	defer rows.Close()
	items := []WorkQueue{}
	for rows.Next() {
		var q WorkQueue
		var limit *int32
		var workers []byte
		if err := rows.Scan(&q.Name, &q.Depth, &q.Scheduled, &q.Running, &q.PausedAt, &limit, &q.CreatedAt, &q.UpdatedAt, &q.SlotsInUse, &q.WaitingForSlot, &workers); err != nil {
			return nil, fmt.Errorf("scan work queue: %w", err)
		}
		if limit != nil {
			n := int(*limit)
			q.ConcurrencyLimit = &n
		}
		q.Paused = q.PausedAt != nil
		if err := json.Unmarshal(workers, &q.Workers); err != nil {
			return nil, fmt.Errorf("work queue %s: decode workers: %w", q.Name, err)
		}
		q.WorkersOnline = len(q.Workers)
		items = append(items, q)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list work queues: %w", err)
	}
	return items, nil
}

// WorkQueueSettings are what POST /work-queues saves.
type WorkQueueSettings struct {
	Name string `json:"name"`
	// ConcurrencyLimit is the most task runs of the queue running at once;
	// nil means no limit.
	ConcurrencyLimit *int `json:"concurrency_limit"`
}

// Validate names each bad field.
func (s WorkQueueSettings) Validate() error {
	p := &domain.Problems{Message: "invalid work queue"}
	switch {
	case s.Name == "":
		p.Add("name", "required")
	case !domain.ValidName(s.Name):
		p.Add("name", "%q is not a valid name: use letters, digits, '.', '_' and '-'", s.Name)
	}
	if s.ConcurrencyLimit != nil && *s.ConcurrencyLimit < 1 {
		p.Add("concurrency_limit", "must be 1 or more, or null for no limit; got %d", *s.ConcurrencyLimit)
	}
	return p.Err()
}

// WorkQueueSave creates or updates a work queue's settings; it reports
// whether the queue had no settings before.
func (r *Reader) WorkQueueSave(ctx context.Context, s WorkQueueSettings) (bool, error) {
	if err := s.Validate(); err != nil {
		return false, err
	}
	var created bool
	// Under the queue's lock, which waits for the transactions recording
	// starts on it: updated_at, the time the lock was taken, divides the
	// attempts started without a slot, which count against the limit, from
	// those that see it (work_queue_slots_in_use).
	err := pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT lock_work_queue_for_save($1)`, s.Name); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `
INSERT INTO work_queues (name, concurrency_limit, updated_at) VALUES ($1, $2, clock_timestamp())
ON CONFLICT (name) DO UPDATE SET concurrency_limit = EXCLUDED.concurrency_limit, updated_at = EXCLUDED.updated_at
RETURNING xmax = 0`, s.Name, s.ConcurrencyLimit).Scan(&created)
	})
	if err != nil {
		return false, fmt.Errorf("save work queue %s: %w", s.Name, err)
	}
	return created, nil
}
