package commands

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
)

// commandAttempts is how many times a command is decided again after
// losing a race with another writer.
const commandAttempts = 10

// retryTx runs fn in a transaction of store, again while it loses a race
// with another writer (Retryable), at most commandAttempts times.
func retryTx(ctx context.Context, store *eventstore.Store, fn func(tx pgx.Tx) error) error {
	return retryTxN(ctx, store, commandAttempts, func(tx pgx.Tx, _ int) error { return fn(tx) })
}

// retryTxN is retryTx for at most attempts tries; fn learns which try it
// is (0 for the first). The error of the last try, when it lost the race
// too, is kept in the chain of the conflict returned.
func retryTxN(ctx context.Context, store *eventstore.Store, attempts int, fn func(tx pgx.Tx, try int) error) error {
	var err error
	for try := range attempts {
		if err = store.InTx(ctx, func(tx pgx.Tx) error { return fn(tx, try) }); !Retryable(err) {
			return err
		}
	}
	return &racedError{tries: attempts, err: err}
}

// Retryable reports whether deciding again may succeed: a stream version
// conflict, a cached state found out of date, a deadlock, a serialization
// failure, or two creators of one deployment name.
func Retryable(err error) bool {
	if errors.Is(err, eventstore.ErrConflict) || errors.Is(err, errStale) {
		return true
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case "40P01", "40001":
		return true
	case "23505":
		return pgErr.TableName == "deployment_names"
	}
	return false
}

// racedError is a command that lost the race every time it was tried: a
// domain conflict (see As) that keeps the last try's error in its chain.
type racedError struct {
	tries int
	err   error
}

func (e *racedError) Error() string {
	return fmt.Sprintf("changed concurrently %d times; try again: %v", e.tries, e.err)
}

func (e *racedError) Unwrap() error { return e.err }

// As makes it read as a domain error with CodeConflict.
func (e *racedError) As(target any) bool {
	de, ok := target.(**domain.Error)
	if ok {
		*de = domain.Errorf(domain.CodeConflict, "%s", e.Error())
	}
	return ok
}
