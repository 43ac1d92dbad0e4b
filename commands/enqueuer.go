package commands

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/riverjob"
)

// Enqueuer inserts task run jobs within the caller's transaction: River's
// client, adapted by jobs. Commands delete, cancel and reschedule jobs
// through riverjob's statements.
type Enqueuer interface {
	EnqueueTx(ctx context.Context, tx pgx.Tx, jobs []riverjob.Job) error
}
