package jobs

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/ordoflow/ordo/commands"
	"github.com/ordoflow/ordo/riverjob"
)

// NewInsertClient returns a River client that only inserts jobs, as
// commands need (RiverEnqueuer). Its insert notifications are not rate
// limited beyond 1ms per queue, so workers hear of new runs at once.
func NewInsertClient(pool *pgxpool.Pool) (*river.Client[pgx.Tx], error) {
	return river.NewClient(riverpgxv5.New(pool), &river.Config{FetchCooldown: time.Millisecond})
}

// RiverEnqueuer is the commands' Enqueuer on River's client.
func RiverEnqueuer(client *river.Client[pgx.Tx]) commands.Enqueuer { return riverEnqueuer{client} }

type riverEnqueuer struct{ client *river.Client[pgx.Tx] }

var _ commands.Enqueuer = riverEnqueuer{}

// EnqueueTx inserts jobs within tx.
func (e riverEnqueuer) EnqueueTx(ctx context.Context, tx pgx.Tx, jobs []riverjob.Job) error {
	params := make([]river.InsertManyParams, len(jobs))
	for i, j := range jobs {
		params[i] = river.InsertManyParams{
			Args:       j.Args,
			InsertOpts: &river.InsertOpts{Queue: j.Queue, ScheduledAt: j.ScheduledAt, MaxAttempts: riverjob.MaxAttempts},
		}
	}
	_, err := e.client.InsertManyFastTx(ctx, tx, params)
	return err
}
