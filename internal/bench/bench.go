package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Env is where the scenarios run.
type Env struct {
	// NewDatabase returns the URL of a new database, migrated to the
	// current schema, that nothing else uses. Required.
	NewDatabase func(ctx context.Context) (string, error)
	// TempDir holds workers' workspaces and pgbench scripts. Required.
	TempDir string
	// Progress receives a line about each step while a scenario runs.
	// Optional.
	Progress func(line string)
}

func (e Env) newDatabase(ctx context.Context) (string, error) {
	url, err := e.NewDatabase(ctx)
	if err != nil {
		return "", fmt.Errorf("new database: %w", err)
	}
	return url, nil
}

func (e Env) logf(format string, args ...any) {
	if e.Progress != nil {
		e.Progress(fmt.Sprintf(format, args...))
	}
}

// loadProgress reports the loading of a synthetic log of n events.
func (e Env) loadProgress(n int) func(total int, perSecond float64) {
	return func(total int, perSecond float64) {
		e.logf("%s of %s events loaded (%s events/s)", count(total), count(n), count(perSecond))
	}
}

// Sizes scale every scenario. FullSizes are the sizes of the targets;
// QuickSizes run the whole set in well under a minute.
type Sizes struct {
	Rounds           int // rounds of replay, GET /runs, growth and step latency, of which the median is reported
	ThroughputRounds int // rounds of scenario 1: more, since raw River's rate moves by up to a third between rounds
	OneRunTasks      int // the tasks of the one big run of scenario 1
	Runs             int // the small runs of scenario 1 ...
	RunTasks         int // ... and the tasks of each
	RiverJobs        int // no-op jobs of the raw River baseline
	ChainTasks       int // the chain of the step latency scenario

	SleepTasks    int           // sequential command tasks that each sleep
	Sleep         time.Duration // how long each of them sleeps
	LightTasks    int           // sequential command tasks that exit at once
	LightTarget   time.Duration // the wall time the light tasks must stay under
	AppendClients int           // concurrent appenders, and pgbench clients
	AppendTime    time.Duration // how long each append measure lasts (whole seconds, for pgbench)

	ReplayEvents int // the log replayed
	APIRuns      int // flow runs in the read model queried
	APIClients   int // concurrent HTTP clients
	APIRequests  int // requests measured, over all clients

	LatenessRuns int // scheduled runs, one a second
	// ScheduledDeployments are the deployments of the schedules-at-scale
	// scenario, each on a schedule of every SchedulePeriod (a cron of every
	// minute for a minute).
	ScheduledDeployments int
	SchedulePeriod       time.Duration
	GrowthEvents         []int // synthetic events loaded into the log before each growth step
	BlobMiB              int   // the blob of the blob store scenarios, in MiB
	WorkerBlobMiB        int   // the output the worker-memory-blobs scenario's worker stores and fetches, in MiB
	PythonRounds         int   // rounds of the Python example pipeline, each run locally, warm and cold
	PythonRows           int   // the houses the Python example pipeline reads
	PythonTrivialRuns    int   // runs of the trivial Python task, warm and cold

	Automations      int           // automations defined in the automation latency scenario
	AutomationTime   time.Duration // how long runs fail at 100 a second there
	AutomationsMany  int           // automations defined on the many side of the consumer throughput scenario (10 on the other)
	AutomationEvents int           // events a round there
	AutomationRounds int           // its interleaved rounds
}

// FullSizes are the sizes the targets are set for.
func FullSizes() Sizes {
	return Sizes{
		Rounds: 3, ThroughputRounds: 5, OneRunTasks: 10_000, Runs: 1_000, RunTasks: 10, RiverJobs: 10_000, ChainTasks: 1_000,
		SleepTasks: 10, Sleep: 500 * time.Millisecond, LightTasks: 40, LightTarget: 400 * time.Millisecond,
		AppendClients: 8, AppendTime: 5 * time.Second,
		ReplayEvents: 1_000_000, APIRuns: 1_000_000, APIClients: 32, APIRequests: 10_000,
		LatenessRuns: 300, GrowthEvents: []int{0, 1_000_000, 5_000_000},
		ScheduledDeployments: 1_000, SchedulePeriod: time.Minute,
		BlobMiB: 256, WorkerBlobMiB: 1024,
		PythonRounds: 5, PythonRows: 5000, PythonTrivialRuns: 100,
		Automations: 1_000, AutomationTime: 30 * time.Second, AutomationsMany: 10_000, AutomationEvents: 50_000, AutomationRounds: 5,
	}
}

// QuickSizes scale every scenario down so that all of them run in about
// half a minute: enough to show that each works, not to judge a target.
func QuickSizes() Sizes {
	return Sizes{
		Rounds: 1, ThroughputRounds: 1, OneRunTasks: 500, Runs: 50, RunTasks: 10, RiverJobs: 500, ChainTasks: 100,
		SleepTasks: 2, Sleep: 500 * time.Millisecond, LightTasks: 10, LightTarget: 100 * time.Millisecond,
		AppendClients: 8, AppendTime: time.Second,
		ReplayEvents: 20_000, APIRuns: 10_000, APIClients: 32, APIRequests: 500,
		LatenessRuns: 2, GrowthEvents: []int{0, 20_000},
		ScheduledDeployments: 10, SchedulePeriod: 2 * time.Second,
		BlobMiB: 8, WorkerBlobMiB: 32,
		PythonRounds: 1, PythonRows: 500, PythonTrivialRuns: 5,
		Automations: 1_000, AutomationTime: 3 * time.Second, AutomationsMany: 1_000, AutomationEvents: 5_000, AutomationRounds: 3,
	}
}

// Row is one line of the report.
type Row struct {
	Scenario string `json:"scenario"` // the scenario's name, as --only takes it
	What     string `json:"what"`
	Ordo     string `json:"ordo"`               // Ordo's figure, for people
	Baseline string `json:"baseline,omitempty"` // the baseline's figure, measured in the same run unless it says otherwise
	// Ratio is Ordo's figure over the baseline's, when both were measured.
	Ratio  *float64 `json:"ratio,omitempty"`
	Target string   `json:"target,omitempty"`
	Checks []Check  `json:"checks,omitempty"` // the target, as figures
	// Metrics are the raw figures, named with their unit.
	Metrics map[string]float64 `json:"metrics"`
	Note    string             `json:"note,omitempty"`
	Error   string             `json:"error,omitempty"` // the scenario failed
}

// Check is one bound of a target.
type Check struct {
	Name   string  `json:"name"` // what is bounded, e.g. "p99 ms" or "ratio"
	Value  float64 `json:"value"`
	AtMost bool    `json:"at_most"` // the bound is an upper bound (Value ≤ Limit), else a lower one
	Limit  float64 `json:"limit"`
	Met    bool    `json:"met"`
}

func atLeast(name string, value, limit float64) Check {
	return Check{Name: name, Value: value, Limit: limit, Met: value >= limit}
}

func atMost(name string, value, limit float64) Check {
	return Check{Name: name, Value: value, AtMost: true, Limit: limit, Met: value <= limit}
}

// Met reports whether every check of the row passed; ok is false when the
// row has no target.
func (r Row) Met() (met, ok bool) {
	if len(r.Checks) == 0 {
		return false, false
	}
	for _, c := range r.Checks {
		if !c.Met {
			return false, true
		}
	}
	return true, true
}

func ratio(x float64) *float64 { return &x }

// Options are what a run of the scenarios needs beyond the Env.
type Options struct {
	Sizes Sizes
	// Only selects scenarios by name; empty means all of them.
	Only []string
	// ServeAPI serves Ordo's HTTP API on a database and returns its base
	// URL and a function that stops it. The runs-api scenario needs it.
	ServeAPI func(ctx context.Context, databaseURL string) (baseURL string, stop func(), err error)
	// Processes starts the ordo binary as a server or a worker. The memory
	// scenarios need it.
	Processes *Processes
	// AfterScenario, when set, runs after each scenario (to drop its
	// databases, say).
	AfterScenario func(ctx context.Context)
}

// Processes start Ordo's own binary as a child process.
type Processes struct {
	// Server returns the command of a server on the database, listening on
	// addr.
	Server func(ctx context.Context, databaseURL, addr string) *exec.Cmd
	// Worker returns the command of a worker on the database's default
	// queue, with the settings of scenario 1 and the no-op handler.
	Worker func(ctx context.Context, databaseURL string) *exec.Cmd
}

// Scenario is one of the measures of issue #8.
type Scenario struct {
	Name  string
	Title string
	run   func(ctx context.Context, env Env, opts Options) ([]Row, error)
}

// Scenarios are every scenario, in the order they run.
func Scenarios() []Scenario {
	return []Scenario{
		{"throughput", "no-op tasks next to raw River", throughputScenario},
		{"step-latency", "step latency of a chain", stepLatencyScenario},
		{"commands", "sequential command tasks", commandsScenario},
		{"command-throughput", "`true` command tasks next to raw River + os/exec", commandThroughputScenario},
		{"append", "event append next to pgbench", appendScenario},
		{"replay", "replay next to a sequential scan", replayScenario},
		{"runs-api", "GET /runs under concurrent clients", runsAPIScenario},
		{"lateness", "schedule lateness", latenessScenario},
		{"lateness-load", "schedule lateness under load", latenessLoadScenario},
		{"schedules", "schedules at scale: 1,000 deployments on a 1-minute cron", schedulesScenario},
		{"memory", "peak memory of a server and a worker", memoryScenario},
		{"worker-memory-blobs", "peak memory of a worker that moves a large output", workerMemoryBlobsScenario},
		{"growth", "throughput as the log grows", growthScenario},
		{"blobs-postgres", "the postgres blob store next to a plain COPY", blobsPostgresScenario},
		{"blobs-s3", "the s3 blob store next to bare PutObject/GetObject on SeaweedFS", blobsS3Scenario},
		{"python-pipeline", "the Python example pipeline next to the same flow called locally", pythonPipelineScenario},
		{"python-trivial", "a trivial Python task's start to end", pythonTrivialScenario},
		{"automation-latency", "an automation's webhook after the failure that fires it", automationLatencyScenario},
		{"automation-consumer", "the automation consumer with 10,000 automations next to 10", consumerThroughputScenario},
	}
}

// Select returns the scenarios named in only (all of them when only is
// empty), in their usual order.
func Select(only []string) ([]Scenario, error) {
	all := Scenarios()
	if len(only) == 0 {
		return all, nil
	}
	var names []string
	for _, s := range all {
		names = append(names, s.Name)
	}
	for _, n := range only {
		if !slices.Contains(names, n) {
			return nil, fmt.Errorf("unknown scenario %q: the scenarios are %s", n, strings.Join(names, ", "))
		}
	}
	return slices.DeleteFunc(all, func(s Scenario) bool { return !slices.Contains(only, s.Name) }), nil
}

// Report is the outcome of one run of the scenarios.
type Report struct {
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"duration_ns"`
	Quick    bool          `json:"quick"`
	Machine  string        `json:"machine"`
	Postgres string        `json:"postgres"`
	Command  string        `json:"command,omitempty"`
	// Load is the machine's load average (1 minute) when the run started
	// and ended: other work on the machine skews every figure.
	Load string `json:"load,omitempty"`
	Rows []Row  `json:"rows"`
}

// Run runs the selected scenarios one after the other. A scenario that
// fails leaves a row with its error and the others still run; the error
// returned joins the failures.
func Run(ctx context.Context, env Env, opts Options) (*Report, error) {
	scenarios, err := Select(opts.Only)
	if err != nil {
		return nil, err
	}
	rep := &Report{Started: time.Now(), Machine: fmt.Sprintf("%s/%s, %d CPUs", runtime.GOOS, runtime.GOARCH, runtime.NumCPU())}
	startLoad := loadAverage()
	var errs []error
	for i, s := range scenarios {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		began := time.Now()
		step := env
		step.Progress = func(line string) {
			env.logf("[%d/%d %s] %s", i+1, len(scenarios), s.Name, line)
		}
		step.logf("%s", s.Title)
		rows, err := s.measure(ctx, step, opts)
		if opts.AfterScenario != nil {
			opts.AfterScenario(context.WithoutCancel(ctx))
		}
		if err != nil {
			step.logf("failed after %s: %v", since(began), err)
			errs = append(errs, fmt.Errorf("%s: %w", s.Name, err))
			rows = append(rows, Row{Scenario: s.Name, What: s.Title, Error: err.Error()})
		} else {
			step.logf("done in %s", since(began))
		}
		rep.Rows = append(rep.Rows, rows...)
	}
	rep.Duration = time.Since(rep.Started)
	if startLoad != "" {
		rep.Load = fmt.Sprintf("load average %s at the start, %s at the end", startLoad, loadAverage())
	}
	return rep, errors.Join(errs...)
}

// loadAverage is the 1-minute load average, or "" where /proc has none.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	return strings.Fields(string(b))[0]
}

// RunScenario runs one scenario by name.
func RunScenario(ctx context.Context, env Env, opts Options, name string) ([]Row, error) {
	s, err := Select([]string{name})
	if err != nil {
		return nil, err
	}
	return s[0].measure(ctx, env, opts)
}

// measure runs the scenario and names it in its rows.
func (s Scenario) measure(ctx context.Context, env Env, opts Options) ([]Row, error) {
	rows, err := s.run(ctx, env, opts)
	for i := range rows {
		rows[i].Scenario = s.Name
	}
	return rows, err
}

func since(t time.Time) time.Duration {
	return time.Since(t).Round(100 * time.Millisecond)
}
