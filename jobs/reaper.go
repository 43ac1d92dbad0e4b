package jobs

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/commands"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
)

// ReaperOptions tune a Reaper. The zero value of each field means its
// default.
type ReaperOptions struct {
	// Interval is how often the reaper looks for dead workers. Defaults to
	// 5s.
	Interval time.Duration
	// DeadAfter is how old a worker's last heartbeat must be for the worker
	// to be declared dead. It must be well above the workers'
	// HeartbeatInterval. Defaults to 15s: with the defaults, a worker killed
	// mid-task has its attempts recorded as crashed within 25 s.
	DeadAfter time.Duration
	// Logger receives what the reaper does. Defaults to slog.Default().
	Logger *slog.Logger
}

func (o *ReaperOptions) validate() error {
	p := &domain.Problems{Message: "invalid reaper options"}
	if o.Interval < 0 {
		p.Add("Interval", "must not be negative")
	}
	if o.DeadAfter < 0 {
		p.Add("DeadAfter", "must not be negative")
	}
	return p.Err()
}

// Reaper recovers from workers that died: every Interval it declares dead
// the workers whose heartbeat is older than DeadAfter and records their
// attempts as crashed (commands.Reaping); see the package doc.
type Reaper struct {
	reaping *commands.Reaping
	opts    ReaperOptions
}

// ReapResult says what one reaper pass did.
type ReapResult = commands.ReapResult

// NewReaper returns a reaper; Run runs it.
func NewReaper(pool *pgxpool.Pool, store *eventstore.Store, opts ReaperOptions) (*Reaper, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if opts.Interval == 0 {
		opts.Interval = 5 * time.Second
	}
	if opts.DeadAfter == 0 {
		opts.DeadAfter = 15 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	client, err := NewInsertClient(pool)
	if err != nil {
		return nil, err
	}
	return &Reaper{reaping: commands.NewReaping(pool, store, RiverEnqueuer(client), opts.Logger), opts: opts}, nil
}

// Run reaps every Interval until ctx ends. Errors are logged and the next
// pass tries again.
func (r *Reaper) Run(ctx context.Context) error {
	t := time.NewTicker(r.opts.Interval)
	defer t.Stop()
	for {
		if _, err := r.Reap(ctx); err != nil && ctx.Err() == nil {
			r.opts.Logger.Error("reaper", "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Reap makes one pass (commands.Reaping.Reap).
func (r *Reaper) Reap(ctx context.Context) (ReapResult, error) {
	return r.reaping.Reap(ctx, r.opts.DeadAfter)
}
