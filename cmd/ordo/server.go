package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/ordoflow/ordo/api"
	"github.com/ordoflow/ordo/api/ui"
	"github.com/ordoflow/ordo/automations"
	"github.com/ordoflow/ordo/blobstore"
	"github.com/ordoflow/ordo/commands"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/jobs"
	"github.com/ordoflow/ordo/migrations"
	"github.com/ordoflow/ordo/projections"
)

// serverOptions are the flags of `ordo server` (and of `ordo dev`).
type serverOptions struct {
	databaseURL string
	addr        string
	migrate     bool
	blobStore   string
	publicURL   string // where people reach the UI; links in messages
	// allowPrivateWebhooks lets webhooks reach loopback and private
	// addresses: ordo dev, or ORDO_WEBHOOK_ALLOW_PRIVATE=true.
	allowPrivateWebhooks bool
	// delivery tunes webhook delivery (tests: attempts, backoff, secrets).
	delivery automations.DeliveryOptions
}

func (o *serverOptions) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.databaseURL, "database-url", "", flagHelp("database-url", "PostgreSQL connection URL; also read from DATABASE_URL"))
	cmd.Flags().StringVar(&o.addr, "addr", "127.0.0.1:4200", flagHelp("addr", "address the API and UI listen on"))
	cmd.Flags().BoolVar(&o.migrate, "migrate", false, flagHelp("migrate", "apply pending database migrations before starting"))
	cmd.Flags().StringVar(&o.publicURL, "public-url", "", flagHelp("public-url", "the server's URL as people reach it, for links to runs in automation messages; defaults to http://<addr>"))
	cmd.Flags().StringVar(&o.blobStore, "blob-store", "", flagHelp("blob-store", "where task outputs are stored, as the workers have it: postgres (the default), file:///path or s3://bucket/prefix"))
}

// publicBase is the base of links to the UI: --public-url, else the listen address.
func (o serverOptions) publicBase() string {
	if o.publicURL != "" {
		return o.publicURL
	}
	host, port, err := net.SplitHostPort(o.addr)
	if err != nil {
		return "http://" + o.addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "localhost" // listening on every address
	}
	return "http://" + net.JoinHostPort(host, port)
}

// The Ordo actions of automations are the commands'.
var _ automations.OrdoActions = (*commands.AutomationActions)(nil)

func newServerCommand() *cobra.Command {
	var o serverOptions
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the API, the UI, the projector, the scheduler and the crash reaper",
		Long: `Run Ordo's server: the HTTP API and web UI, the projector that keeps the
read models up to date with the event log, the scheduler that creates runs
ahead of time, the timer that makes scheduled work due on time, and the
reaper that marks the task runs of dead workers crashed within 30 seconds.
Several servers may run against one database.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger := newLogger(cmd.ErrOrStderr())
			pool, err := openPool(cmd.Context(), o.databaseURL)
			if err != nil {
				return err
			}
			defer pool.Close()
			srv, err := newServer(cmd.Context(), pool, o, logger)
			if err != nil {
				return err
			}
			return srv.run(cmd.Context(), nil)
		},
	}
	o.register(cmd)
	return cmd
}

// server is everything `ordo server` runs in one process.
type server struct {
	opts      serverOptions
	pool      *pgxpool.Pool
	store     *eventstore.Store
	projector *projections.Projector
	dueTimer  *jobs.DueTimer
	scheduler *jobs.Scheduler
	reaper    *jobs.Reaper
	autoRiver *river.Client[pgx.Tx] // works webhook deliveries
	delivery  automations.DeliveryOptions
	consumer  *automations.Consumer
	sweeper   *automations.Sweeper // ends deliveries whose job River gave up on
	handler   http.Handler
	blobs     blobstore.Store // nil when it cannot be opened
	logger    *slog.Logger
}

func newServer(ctx context.Context, pool *pgxpool.Pool, o serverOptions, logger *slog.Logger) (*server, error) {
	if o.migrate {
		if err := migrations.Up(ctx, pool); err != nil {
			return nil, err
		}
	}
	if v, err := migrations.Status(ctx, pool); err != nil {
		return nil, err
	} else if !v.Current() {
		return nil, fmt.Errorf("the database schema is at version %d (river %d), this binary needs %d (river %d): run `ordo migrate up` or start with --migrate", v.Ordo, v.River, v.Latest, v.LatestRvr)
	}
	store := eventstore.New(pool, domain.NewRegistry())
	projector, err := projections.NewProjector(store, projections.ProjectorOptions{Logger: logger})
	if err != nil {
		return nil, err
	}
	insertClient, err := jobs.NewInsertClient(pool)
	if err != nil {
		return nil, err
	}
	dueTimer := jobs.NewDueTimer(pool, jobs.DueTimerOptions{Logger: logger})
	svc := commands.NewService(pool, store, jobs.RiverEnqueuer(insertClient), commands.ServiceOptions{DueTimer: dueTimer})
	deployments := commands.NewDeploymentCommands(store)
	blobs, err := openBlobStore(ctx, o.blobStore, pool, logger)
	if err != nil {
		return nil, err
	}
	allowPrivate := o.allowPrivateWebhooks || os.Getenv("ORDO_WEBHOOK_ALLOW_PRIVATE") == "true"
	delivery := o.delivery
	delivery.AllowPrivate, delivery.Logger = allowPrivate, logger
	delivery.Store, delivery.PublicURL, delivery.Ordo = store, o.publicBase(), commands.NewAutomationActions(svc, deployments)
	if v := os.Getenv("ORDO_AUTOMATION_BACKOFF"); v != "" {
		if delivery.Backoff, err = time.ParseDuration(v); err != nil || delivery.Backoff <= 0 {
			return nil, fmt.Errorf("ORDO_AUTOMATION_BACKOFF=%q: want a positive duration such as 5s", v)
		}
	}
	autoRiver, err := automations.NewRiverClient(pool, delivery)
	if err != nil {
		return nil, err
	}
	autoSvc := automations.NewService(store, autoRiver, automations.ServiceOptions{AllowPrivate: allowPrivate, RetryAttempts: delivery.MaxAttempts})
	deployments.OnChange(autoSvc.DeploymentChanged) // a deployment's notifications, in its transaction
	auth := api.NewAuth(pool, api.AuthOptions{Logger: logger})
	handler, err := api.New(api.Options{
		Auth:        auth,
		Deployments: deployments,
		Runs:        &runCommands{runs: commands.NewDeploymentRuns(svc), svc: svc},
		Reads:       projections.NewReader(store),
		Projection:  projector,
		Blobs:       blobs,
		Pool:        pool,
		River:       insertClient,
		Automations: autoSvc,
		Context:     ctx,
		Logger:      logger,
	})
	if err != nil {
		return nil, err
	}
	scheduler, err := jobs.NewScheduler(pool, svc, jobs.SchedulerOptions{Logger: logger})
	if err != nil {
		return nil, err
	}
	reaper, err := jobs.NewReaper(pool, store, jobs.ReaperOptions{Logger: logger})
	if err != nil {
		return nil, err
	}
	return &server{opts: o, pool: pool, store: store, projector: projector, dueTimer: dueTimer, scheduler: scheduler, reaper: reaper, blobs: blobs,
		autoRiver: autoRiver, delivery: delivery, consumer: automations.NewConsumer(store, autoRiver, automations.ConsumerOptions{Logger: logger}),
		sweeper: automations.NewSweeper(pool, automations.SweeperOptions{Logger: logger}),
		handler: withUI(handler, auth.ProtectUI(ui.Handler(ui.Options{Store: store, Projection: projector, Logger: logger}))), logger: logger}, nil
}

// run serves until ctx ends. ready, when not nil, receives the listening
// address once the server accepts connections.
func (s *server) run(ctx context.Context, ready func(addr string)) error {
	ln, err := net.Listen("tcp", s.opts.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.opts.addr, err)
	}
	httpServer := &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return ignoreCanceled(s.projector.Run(ctx)) })
	g.Go(func() error { return ignoreCanceled(s.dueTimer.Run(ctx)) })
	g.Go(func() error { return ignoreCanceled(s.scheduler.Run(ctx)) })
	g.Go(func() error { return ignoreCanceled(s.reaper.Run(ctx)) })
	g.Go(func() error { return ignoreCanceled(s.consumer.Run(ctx)) })
	g.Go(func() error { return ignoreCanceled(s.sweeper.Run(ctx)) })
	g.Go(func() error { return ignoreCanceled(automations.RunRescuer(ctx, s.pool, s.delivery)) })
	if err := s.autoRiver.Start(ctx); err != nil {
		return fmt.Errorf("start webhook delivery: %w", err)
	}
	g.Go(func() error {
		<-ctx.Done()
		stop, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		return ignoreCanceled(s.autoRiver.Stop(stop))
	})
	g.Go(func() error {
		if err := httpServer.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		return httpServer.Shutdown(shutdown)
	})
	s.logger.Info("ordo server listening", "url", "http://"+ln.Addr().String(), "api", "http://"+ln.Addr().String()+"/api/v1")
	if ready != nil {
		ready(ln.Addr().String())
	}
	err = g.Wait()
	s.store.Close()
	if s.blobs != nil {
		_ = s.blobs.Close()
	}
	return err
}

// openBlobStore opens the store outputs are downloaded from. A store named
// explicitly must open; the default one may be missing from this build,
// and then only downloads are unavailable (501).
func openBlobStore(ctx context.Context, url string, pool *pgxpool.Pool, logger *slog.Logger) (blobstore.Store, error) {
	s, err := blobstore.Open(ctx, url, pool)
	switch {
	case err == nil:
		return s, nil
	case url != "":
		return nil, fmt.Errorf("open the blob store: %w", err)
	}
	logger.Warn("no blob store: outputs cannot be downloaded", "err", err)
	return nil, nil
}

// withUI serves the web UI at / and everything else (the API under /api/, River UI,
// /healthz, /readyz, /metrics) from the API's handler.
func withUI(apiHandler, uiHandler http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/api/"), strings.HasPrefix(r.URL.Path, "/riverui"), r.URL.Path == "/healthz", r.URL.Path == "/readyz", r.URL.Path == "/metrics":
			apiHandler.ServeHTTP(w, r)
		default:
			uiHandler.ServeHTTP(w, r)
		}
	})
}

func ignoreCanceled(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// runCommands turns the API's run commands into the jobs service's.
type runCommands struct {
	runs *commands.DeploymentRuns
	svc  *commands.Service
}

func (r *runCommands) RunCreate(ctx context.Context, deploymentID uuid.UUID, req api.RunCreateRequest, actor string) (uuid.UUID, error) {
	rr := commands.RunRequest{Parameters: req.Parameters, IdempotencyKey: req.IdempotencyKey, Name: req.Name}
	if req.ScheduledAt != nil {
		rr.ScheduledAt = *req.ScheduledAt
	}
	run, err := r.runs.RunFromDeployment(ctx, deploymentID, rr, actor)
	if err != nil {
		return uuid.Nil, err
	}
	return run.ID, nil
}

func (r *runCommands) RunCancel(ctx context.Context, id uuid.UUID, actor string) error {
	_, err := r.svc.RunCancel(ctx, id, actor)
	return err
}

func (r *runCommands) RunRetry(ctx context.Context, id uuid.UUID, actor string) error {
	_, err := r.svc.RunRetry(ctx, id, actor)
	return err
}

var _ api.RunCommands = (*runCommands)(nil)
