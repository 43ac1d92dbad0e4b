package automations_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/automations"
	"github.com/ordoflow/ordo/internal/pgtest"
)

// A delivery left running by a stopped server is made available again once
// it has run longer than the rescue bound, or discarded when its attempts
// are spent; one running for less, and a job of another queue (a task's,
// which runs as long as its task), are left alone.
func TestRescueStuckDeliveries(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	ctx := context.Background()
	job := func(queue string, attempt int, ago time.Duration) int64 {
		var id int64
		if err := pool.QueryRow(ctx, `
INSERT INTO river_job (kind, queue, state, attempt, max_attempts, attempted_at, args, scheduled_at)
VALUES ($1, $2, 'running', $3, 8, now() - make_interval(secs => $4), jsonb_build_object('firing_id', $5::text, 'action', 0), now())
RETURNING id`, automations.KindDelivery, queue, attempt, ago.Seconds(), uuid.NewString()).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	after := time.Minute
	stuck, spent, young, task := job(automations.QueueAutomations, 2, 2*after), job(automations.QueueAutomations, 8, 2*after),
		job(automations.QueueAutomations, 1, after/2), job("default", 1, 2*after)
	n, err := automations.RescueStuckDeliveries(ctx, pool, after)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("rescued %d, want 2", n)
	}
	for id, want := range map[int64]string{stuck: "available", spent: "discarded", young: "running", task: "running"} {
		var state string
		if err := pool.QueryRow(ctx, `SELECT state FROM river_job WHERE id = $1`, id).Scan(&state); err != nil {
			t.Fatal(err)
		}
		if state != want {
			t.Errorf("job %d: %s, want %s", id, state, want)
		}
	}
}
