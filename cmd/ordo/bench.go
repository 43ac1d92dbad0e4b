package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/internal/bench"
	"github.com/ordoflow/ordo/internal/localpg"
)

func newBenchCommand() *cobra.Command {
	var r benchRun
	cmd := &cobra.Command{
		Use:   "bench [--quick] [--only SCENARIO,...] [--markdown FILE] [--json FILE] [--svg FILE]",
		Short: "Measure Ordo next to its baselines (raw River, pgbench, a plain scan) and its targets",
		Long: `Run Ordo's benchmark scenarios one after the other and print a table: each
figure, the baseline measured in the same run on the same PostgreSQL, their
ratio, the target and whether it is met.

Scenarios: ` + scenarioNames() + `.

Every measure runs in a scratch database of its own (ordo_bench_*), dropped
at the end. The server is the one of --database-url (or ORDO_DATABASE_URL;
its user must be allowed to create databases); DATABASE_URL alone is not
used, so that a benchmark never lands on an application's database by
accident. Without either, ordo bench starts a private PostgreSQL with
production durability settings (fsync on) in a temporary directory, and
removes it at the end.

--quick scales every scenario down so that the whole set takes well under a
minute: it shows that each runs, not whether a target is met. The full set
takes about 15 minutes on two cores. blobs-s3 runs on SeaweedFS's S3 gateway,
started on loopback from the weed binary that scripts/install-deps s3 builds.
Progress goes to standard error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := bench.Select(r.only); err != nil {
				return domain.Invalid("only", "%v", err)
			}
			if !cmd.Flags().Changed("database-url") && os.Getenv("ORDO_DATABASE_URL") == "" {
				r.url = "" // not DATABASE_URL's
			}
			r.stdout, r.stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
			return runBench(cmd.Context(), r)
		},
	}
	cmd.Flags().StringVar(&r.url, "database-url", "", flagHelp("database-url", "PostgreSQL server to measure on; default: a private one started for the run"))
	cmd.Flags().BoolVar(&r.quick, "quick", false, flagHelp("quick", "run every scenario scaled down, in well under a minute"))
	cmd.Flags().StringSliceVar(&r.only, "only", nil, flagHelp("only", "run only these scenarios (comma-separated)"))
	cmd.Flags().StringVar(&r.cpuProfile, "cpuprofile", "", "write a CPU profile of ordo's own process (not PostgreSQL's) to this file, for go tool pprof")
	for _, f := range []struct {
		to          *string
		name, usage string
	}{
		{&r.markdown, "markdown", "also write the table as Markdown to this file"},
		{&r.json, "json", "also write the results as JSON to this file"},
		{&r.svg, "svg", "also write a bar chart of the ratios and targets as SVG to this file"},
	} {
		env := "ORDO_BENCH_" + strings.ToUpper(f.name)
		cmd.Flags().StringVar(f.to, f.name, "", f.usage+" (env "+env+")")
		_ = cmd.Flags().SetAnnotation(f.name, envVar, []string{env})
	}
	cmd.AddCommand(newBenchWorkerCommand())
	return cmd
}

func scenarioNames() string {
	var names []string
	for _, s := range bench.Scenarios() {
		names = append(names, s.Name+" ("+s.Title+")")
	}
	return strings.Join(names, ", ")
}

// benchRun is one `ordo bench`: its flags and where it writes.
type benchRun struct {
	url                 string
	quick               bool
	only                []string
	markdown, json, svg string
	cpuProfile          string
	stdout, stderr      io.Writer
}

func runBench(ctx context.Context, r benchRun) (err error) {
	started := time.Now()
	progress := func(line string) {
		d := time.Since(started)
		if d < time.Minute {
			d = d.Round(100 * time.Millisecond)
		} else {
			d = d.Round(time.Second)
		}
		fmt.Fprintf(r.stderr, "%8s  %s\n", d, line)
	}
	if r.cpuProfile != "" {
		stop, err := startCPUProfile(r.cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	tmp, err := os.MkdirTemp("", "ordo-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	// A private server may run as the postgres user, which must traverse it.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	if r.url == "" {
		progress("starting a private PostgreSQL (durable: fsync on)")
		pg, err := localpg.Start(ctx, localpg.Options{DataDir: filepath.Join(tmp, "postgres")})
		if err != nil {
			return fmt.Errorf("start a private PostgreSQL: %w", err)
		}
		defer pg.Stop(context.WithoutCancel(ctx)) //nolint:errcheck // the directory goes anyway
		r.url = pg.URL()
	}
	dbs, err := bench.OpenDatabases(ctx, r.url)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := dbs.Close(context.WithoutCancel(ctx)); err == nil {
			err = cerr
		}
	}()
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the ordo binary: %w", err)
	}
	sizes := bench.FullSizes()
	if r.quick {
		sizes = bench.QuickSizes()
	}
	env := bench.Env{NewDatabase: dbs.New, TempDir: tmp, Progress: progress}
	rep, runErr := bench.Run(ctx, env, bench.Options{
		Sizes:     sizes,
		Only:      r.only,
		ServeAPI:  serveAPI,
		Processes: benchProcesses(exe, filepath.Join(tmp, "workspaces")),
		AfterScenario: func(ctx context.Context) {
			if err := dbs.Drop(ctx); err != nil {
				progress(err.Error())
			}
		},
	})
	if rep == nil {
		return runErr
	}
	rep.Quick, rep.Postgres = r.quick, dbs.Server()
	rep.Command = "ordo " + strings.Join(os.Args[1:], " ")
	if err := rep.WriteText(r.stdout); err != nil {
		return err
	}
	for _, out := range []struct {
		path  string
		write func(io.Writer) error
	}{{r.markdown, rep.WriteMarkdown}, {r.json, rep.WriteJSON}, {r.svg, rep.WriteSVG}} {
		if out.path == "" {
			continue
		}
		if err := writeFile(out.path, out.write); err != nil {
			return err
		}
	}
	return runErr
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// serveAPI runs Ordo's server in this process on the database, on a free
// port, as `ordo server` would.
func serveAPI(ctx context.Context, databaseURL string) (string, func(), error) {
	pool, err := openPool(ctx, databaseURL)
	if err != nil {
		return "", nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	srv, err := newServer(ctx, pool, serverOptions{addr: "127.0.0.1:0"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		cancel()
		pool.Close()
		return "", nil, err
	}
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- srv.run(ctx, func(addr string) { ready <- addr }) }()
	stop := func() {
		cancel()
		<-done
		pool.Close()
	}
	select {
	case addr := <-ready:
		return "http://" + addr, stop, nil
	case err := <-done:
		cancel()
		pool.Close()
		return "", nil, errors.Join(errors.New("the server stopped before listening"), err)
	}
}

// benchProcesses start this binary as a server, and as a worker that has
// the no-op handler of the throughput scenarios (`ordo bench worker`).
func benchProcesses(exe, workspaces string) *bench.Processes {
	return &bench.Processes{
		Server: func(ctx context.Context, databaseURL, addr string) *exec.Cmd {
			return exec.CommandContext(ctx, exe, "server", "--database-url", databaseURL, "--addr", addr)
		},
		Worker: func(ctx context.Context, databaseURL string) *exec.Cmd {
			return exec.CommandContext(ctx, exe, "bench", "worker", "--database-url", databaseURL, "-q", domain.DefaultWorkQueue,
				"--concurrency", strconv.Itoa(bench.Concurrency), "--fetch-cooldown", bench.FetchCooldown.String(),
				"--fetch-poll-interval", bench.FetchPollInterval.String(), "--workspace-dir", workspaces)
		},
	}
}

// newBenchWorkerCommand is `ordo worker` with the no-op Go handler of the
// benchmark scenarios, for the memory scenario's worker process.
func newBenchWorkerCommand() *cobra.Command {
	cmd := newWorkerCommandWith(bench.NoopHandlers())
	cmd.Use = "worker -q QUEUE"
	cmd.Short = "Run a worker that also has the benchmarks' no-op Go handler"
	cmd.Hidden = true
	return cmd
}

// startCPUProfile profiles this process into file until stop is called.
func startCPUProfile(file string) (stop func(), err error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, fmt.Errorf("cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpuprofile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
