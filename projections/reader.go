package projections

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
)

// Page sizes of lists.
const (
	DefaultPageSize = 50
	MaxPageSize     = 200
)

// Reader answers queries from the read models, and rebuilds a run's audit
// trail and past states from the log.
type Reader struct {
	store *eventstore.Store
	pool  *pgxpool.Pool
	logs  *logListener
	tags  tagStats
}

// NewReader returns a reader on store's database.
func NewReader(store *eventstore.Store) *Reader {
	r := &Reader{store: store, pool: store.Pool()}
	r.logs = &logListener{r: r, log: slog.Default()}
	return r
}

// pageSize checks a requested page size; 0 means the default.
func pageSize(limit int) (int, error) {
	switch {
	case limit == 0:
		return DefaultPageSize, nil
	case limit < 0 || limit > MaxPageSize:
		return 0, domain.Invalid("limit", "must be between 1 and %d, got %d", MaxPageSize, limit)
	}
	return limit, nil
}

// likePattern returns a pattern matching s anywhere, with LIKE's wildcards
// in s taken literally.
func likePattern(s string) string {
	return "%" + strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s) + "%"
}

// where collects SQL conditions with numbered arguments.
type where struct {
	conds []string
	args  []any
}

// add appends cond, in which each ? stands for the next argument.
func (w *where) add(cond string, args ...any) {
	for _, a := range args {
		w.args = append(w.args, a)
		cond = strings.Replace(cond, "?", "$"+strconv.Itoa(len(w.args)), 1)
	}
	w.conds = append(w.conds, cond)
}

func (w *where) sql() string {
	if len(w.conds) == 0 {
		return ""
	}
	return "WHERE " + strings.Join(w.conds, " AND ")
}

// DeploymentFilter selects deployments; they are listed by name.
type DeploymentFilter struct {
	Name      string // part of the name, any case
	Tag       string
	WorkQueue string
	Limit     int    // 1..200; 0 means 50
	Cursor    string // next_cursor of the previous page
}

const deploymentSelect = `
SELECT d.id, d.spec, d.version, d.paused, d.created_at, d.updated_at,
    coalesce((SELECT json_agg(json_build_object('id', n.id, 'scheduled_at', n.scheduled_at) ORDER BY n.scheduled_at)
              FROM (SELECT id, scheduled_at FROM flow_runs f
                    WHERE f.deployment_id = d.id AND f.state_type = 'SCHEDULED'
                    ORDER BY f.scheduled_at LIMIT 5) n), '[]')
FROM deployments d `

// DeploymentList lists deployments by name.
func (r *Reader) DeploymentList(ctx context.Context, f DeploymentFilter) (Page[Deployment], error) {
	limit, err := pageSize(f.Limit)
	if err != nil {
		return Page[Deployment]{}, err
	}
	var w where
	if f.Name != "" {
		w.add(`d.name ILIKE ?`, likePattern(f.Name))
	}
	if f.Tag != "" {
		w.add(`d.tags @> ARRAY[?::text]`, f.Tag)
	}
	if f.WorkQueue != "" {
		w.add(`d.work_queue = ?`, f.WorkQueue)
	}
	if f.Cursor != "" {
		name, id, err := decodeCursor(f.Cursor)
		if err != nil {
			return Page[Deployment]{}, err
		}
		w.add(`(d.name, d.id) > (?, ?)`, name, id)
	}
	w.args = append(w.args, limit+1)
	rows, err := r.pool.Query(ctx, deploymentSelect+w.sql()+` ORDER BY d.name, d.id LIMIT $`+strconv.Itoa(len(w.args)), w.args...)
	if err != nil {
		return Page[Deployment]{}, fmt.Errorf("list deployments: %w", err)
	}
	items, err := scanDeployments(rows)
	if err != nil {
		return Page[Deployment]{}, err
	}
	page := Page[Deployment]{Items: items}
	if len(items) > limit {
		page.Items = items[:limit]
		last := items[limit-1]
		c := encodeCursor(last.Name, last.ID)
		page.NextCursor = &c
	}
	return page, nil
}

// DeploymentGet returns one live deployment with its next scheduled runs.
func (r *Reader) DeploymentGet(ctx context.Context, id uuid.UUID) (Deployment, error) {
	rows, err := r.pool.Query(ctx, deploymentSelect+`WHERE d.id = $1`, id)
	if err != nil {
		return Deployment{}, fmt.Errorf("get deployment: %w", err)
	}
	items, err := scanDeployments(rows)
	if err != nil {
		return Deployment{}, err
	}
	if len(items) == 0 {
		return Deployment{}, domain.Errorf(domain.CodeNotFound, "deployment %s not found", id)
	}
	return items[0], nil
}

func scanDeployments(rows pgx.Rows) ([]Deployment, error) {
	defer rows.Close()
	items := []Deployment{}
	for rows.Next() {
		var d domain.Deployment
		var spec, next []byte
		if err := rows.Scan(&d.ID, &spec, &d.Version, &d.Paused, &d.CreatedAt, &d.UpdatedAt, &next); err != nil {
			return nil, fmt.Errorf("scan deployment: %w", err)
		}
		if err := json.Unmarshal(spec, &d.Spec); err != nil {
			return nil, fmt.Errorf("deployment %s: decode spec: %w", d.ID, err)
		}
		out := DeploymentOf(d)
		if err := json.Unmarshal(next, &out.NextRuns); err != nil {
			return nil, fmt.Errorf("deployment %s: decode next runs: %w", d.ID, err)
		}
		items = append(items, out)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read deployments: %w", err)
	}
	return items, nil
}

// RunTimes says which runs a list shows by when they are due.
type RunTimes int

const (
	// RunsDue, the default, lists the runs that are due (scheduled_at not
	// after now): the runs that started, ended or wait for a worker, newest
	// first. Runs scheduled ahead would otherwise come first and bury them.
	RunsDue RunTimes = iota
	// RunsUpcoming lists the runs scheduled for a time still to come,
	// soonest first: SCHEDULED, or CANCELLED before their time.
	RunsUpcoming
	// RunsAll lists both, newest first.
	RunsAll
)

// ParseRunTimes reads the upcoming parameter of GET /runs: false or empty
// (RunsDue), true (RunsUpcoming) or include (RunsAll).
func ParseRunTimes(s string) (RunTimes, error) {
	switch strings.ToLower(s) {
	case "", "false":
		return RunsDue, nil
	case "true":
		return RunsUpcoming, nil
	case "include":
		return RunsAll, nil
	}
	return 0, domain.Invalid("upcoming", "must be true (only runs scheduled for later), false (runs that are due) or include (both), got %q", s)
}

// RunFilter selects flow runs; they are listed newest first by
// (scheduled_at, id), upcoming ones soonest first.
type RunFilter struct {
	Times      RunTimes           // due (default), upcoming or all
	States     []domain.StateType // any of them
	Deployment string             // a deployment id or name
	Tags       []string           // all of them
	Name       string             // part of the run name, any case
	WorkQueue  string
	Since      *time.Time // scheduled at or after
	Until      *time.Time // scheduled before
	Limit      int        // 1..200; 0 means 50
	Cursor     string     // next_cursor of the previous page
}

// flowRunColumnsSelect are the columns of flow_runs a FlowRun shows, in
// the table's order: scanFlowRuns and binaryRunRow read them so.
var flowRunColumnsSelect = flowRunsTable.list("stream_version")

// RunList lists flow runs.
func (r *Reader) RunList(ctx context.Context, f RunFilter) (Page[FlowRun], error) {
	q, err := runListQuery(f, r.tags.rare(ctx, r.pool, f.Tags))
	if err != nil {
		return Page[FlowRun]{}, err
	}
	limit := q.limit
	rows, err := r.pool.Query(ctx, q.sql, q.queryArgs()...)
	if err != nil {
		return Page[FlowRun]{}, fmt.Errorf("list runs: %w", err)
	}
	items, err := scanFlowRuns(rows)
	if err != nil {
		return Page[FlowRun]{}, err
	}
	page := Page[FlowRun]{Items: items}
	if len(items) > limit {
		page.Items = items[:limit]
		last := items[limit-1]
		c := runCursor(last.ScheduledAt, last.ID)
		page.NextCursor = &c
	}
	return page, nil
}

func runCursor(scheduledAt time.Time, id uuid.UUID) string {
	return encodeCursor(scheduledAt.UTC().Format(time.RFC3339Nano), id)
}

// runQuery is the query of a page of RunList.
type runQuery struct {
	sql   string
	args  []any
	limit int // the page size; the query asks for one row more, to know whether another page follows
	// planEach says that the query must be planned for its arguments each
	// time it runs, rather than with a plan cached for any argument.
	planEach bool
}

// queryArgs are the arguments of pgx's Query for q, with the result
// formats of opts.
func (q runQuery) queryArgs(opts ...any) []any {
	if q.planEach {
		// An unnamed statement: PostgreSQL plans it for these arguments.
		opts = append(opts, pgx.QueryExecModeCacheDescribe)
	}
	return append(opts, q.args...)
}

// runListQuery builds the query of a page of RunList.
//
// Filter values are written into the SQL as literals when they can only
// be letters, digits and a few marks (states, valid names and tags, ids),
// and the page size always is. Each filter then has its own prepared
// statement, planned once with the planner knowing its values: PostgreSQL
// keeps that plan and reuses it, as its only arguments left (cursor, since,
// until) bound the time index and never change which index suits. Planning
// is most of the database's work for a page. Other values (a name to
// search for, or filter values that are not valid names, which no run has
// anyway) stay arguments, and such queries are planned each time.
//
// The page is read in time order from an index, stopping at the page's
// end, unless rareTag says that a tag filtered on is rare: the planner,
// which knows the common tags but not how rare the others are, would then
// still walk the runs in time order, through the whole table if the tag is
// on none of them. The runs with the tag are then collected first, from
// the tags index, and sorted.
func runListQuery(f RunFilter, rareTag bool) (runQuery, error) {
	limit, err := pageSize(f.Limit)
	if err != nil {
		return runQuery{}, err
	}
	q := runQuery{limit: limit}
	var w where
	if len(f.States) > 0 {
		states := make([]string, 0, len(f.States))
		for _, s := range f.States {
			if !s.Valid() {
				return runQuery{}, domain.Invalid("state", "unknown state type %q", s)
			}
			states = append(states, sqlLiteral(string(s)))
		}
		slices.Sort(states)
		w.add(`state_type IN (` + strings.Join(slices.Compact(states), ", ") + `)`)
	}
	if f.Deployment != "" {
		if id, err := uuid.Parse(f.Deployment); err == nil {
			w.add(`deployment_id = ` + sqlLiteral(id.String()))
		} else if domain.ValidName(f.Deployment) {
			w.add(`deployment_name = ` + sqlLiteral(f.Deployment))
		} else {
			w.add(`deployment_name = ?`, f.Deployment)
			q.planEach = true
		}
	}
	if len(f.Tags) > 0 {
		if !slices.ContainsFunc(f.Tags, func(t string) bool { return !domain.ValidTag(t) }) {
			tags := slices.Clone(f.Tags)
			slices.Sort(tags)
			w.add(`tags @> ` + sqlLiteral(`{"`+strings.Join(slices.Compact(tags), `","`)+`"}`) + `::text[]`)
		} else {
			w.add(`tags @> ?`, f.Tags)
			q.planEach = true
		}
	}
	if f.Name != "" {
		w.add(`name ILIKE ?`, likePattern(f.Name))
		q.planEach = true
	}
	if f.WorkQueue != "" {
		if domain.ValidName(f.WorkQueue) {
			w.add(`work_queue = ` + sqlLiteral(f.WorkQueue))
		} else {
			w.add(`work_queue = ?`, f.WorkQueue)
			q.planEach = true
		}
	}
	if f.Since != nil {
		w.add(`scheduled_at >= ?`, *f.Since)
	}
	if f.Until != nil {
		w.add(`scheduled_at < ?`, *f.Until)
	}
	if f.Cursor != "" {
		at, id, err := decodeCursor(f.Cursor)
		if err != nil {
			return runQuery{}, err
		}
		t, err := time.Parse(time.RFC3339Nano, at)
		if err != nil {
			return runQuery{}, domain.Invalid("cursor", "not a cursor from this list")
		}
		if f.Times == RunsUpcoming {
			w.add(`(scheduled_at, id) > (?, ?)`, t, id)
		} else {
			w.add(`(scheduled_at, id) < (?, ?)`, t, id)
		}
	}
	q.args = w.args
	order := ` ORDER BY scheduled_at DESC, id DESC LIMIT ` + strconv.Itoa(limit+1)
	// The two lists part the runs by time alone, so that each is a range of
	// the time column that every index of the list ends with: a condition on
	// the state as well would have the planner step over every run
	// scheduled ahead.
	switch f.Times {
	case RunsDue:
		w.add(`scheduled_at <= now()`)
	case RunsUpcoming:
		w.add(`scheduled_at > now()`)
		order = ` ORDER BY scheduled_at, id LIMIT ` + strconv.Itoa(limit+1)
	}
	if rareTag && len(f.Tags) > 0 {
		q.sql = `WITH tagged AS MATERIALIZED (SELECT ` + flowRunColumnsSelect + ` FROM flow_runs ` + w.sql() + `)
SELECT * FROM tagged` + order
	} else {
		q.sql = `SELECT ` + flowRunColumnsSelect + ` FROM flow_runs ` + w.sql() + order
	}
	return q, nil
}

// sqlLiteral quotes s as an SQL string literal. runListQuery only gives it
// values made of letters, digits and marks that need no escaping; the
// doubled quote is for safety's sake.
func sqlLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// tagStats knows which run tags are common: the most common elements of
// flow_runs.tags in the planner's statistics, read again every minute.
type tagStats struct {
	mu     sync.Mutex
	read   time.Time
	common map[string]bool // nil: no statistics
}

// tagStatsAge is how long tagStats trusts what it read.
const tagStatsAge = time.Minute

// rare reports whether the statistics list some tags as common and not one
// of tags. Without statistics (a new or small table) it reports false.
func (s *tagStats) rare(ctx context.Context, pool *pgxpool.Pool, tags []string) bool {
	if len(tags) == 0 {
		return false
	}
	common := s.current(ctx, pool)
	if len(common) == 0 {
		return false
	}
	for _, t := range tags {
		if !common[t] {
			return true
		}
	}
	return false
}

// current returns the common tags, reading them again when they are older
// than tagStatsAge. The lock is not held while they are read: requests in
// the meantime use the ones read before.
func (s *tagStats) current(ctx context.Context, pool *pgxpool.Pool) map[string]bool {
	s.mu.Lock()
	common, stale := s.common, time.Since(s.read) > tagStatsAge
	if stale {
		s.read = time.Now() // one reader at a time; a failure is tried again in a minute
	}
	s.mu.Unlock()
	if !stale {
		return common
	}
	var elems []string
	err := pool.QueryRow(ctx, `
SELECT coalesce(most_common_elems::text::text[], '{}') FROM pg_stats
WHERE schemaname = current_schema() AND tablename = 'flow_runs' AND attname = 'tags'`).Scan(&elems)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		common = nil
	case err != nil:
		slog.Debug("read tag statistics", "err", err)
		return common
	default:
		common = make(map[string]bool, len(elems))
		for _, e := range elems {
			common[e] = true
		}
	}
	s.mu.Lock()
	s.common = common
	s.mu.Unlock()
	return common
}

// AppendRunListJSON appends the page RunList(f) returns, as the JSON
// document of GET /runs and a newline. It writes each row's columns straight
// from PostgreSQL's binary format into JSON, without building a FlowRun:
// listing runs is the API's busiest read.
func (r *Reader) AppendRunListJSON(ctx context.Context, b []byte, f RunFilter) ([]byte, error) {
	q, err := runListQuery(f, r.tags.rare(ctx, r.pool, f.Tags))
	if err != nil {
		return b, err
	}
	limit := q.limit
	rows, err := r.pool.Query(ctx, q.sql, q.queryArgs(pgx.QueryResultFormats{pgx.BinaryFormatCode})...)
	if err != nil {
		return b, fmt.Errorf("list runs: %w", err)
	}
	defer rows.Close()
	start := len(b)
	b = append(b, `{"items":[`...)
	var cursor *string
	var last binaryRunRow
	n := 0
	for rows.Next() {
		if n == limit {
			c := runCursor(last.scheduledAt, last.id)
			cursor = &c
			break
		}
		if n > 0 {
			b = append(b, ',')
		}
		if b, err = last.appendJSON(b, rows.RawValues()); err != nil {
			return b[:start], fmt.Errorf("list runs: %w", err)
		}
		n++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return b[:start], fmt.Errorf("list runs: %w", err)
	}
	b = append(b, `],"next_cursor":`...)
	if cursor == nil {
		b = append(b, "null"...)
	} else {
		b = appendJSONString(b, *cursor)
	}
	return append(b, "}\n"...), nil
}

func scanFlowRuns(rows pgx.Rows) ([]FlowRun, error) {
	defer rows.Close()
	items := []FlowRun{}
	for rows.Next() {
		var f FlowRun
		var stateType string
		var params, result, metrics []byte
		var parentTask, parentFlow pgtype.UUID
		// UUIDs scan as plain arrays: through uuid.UUID's sql.Scanner they
		// would be formatted as text and parsed again, a fifth of a page's cost.
		if err := rows.Scan((*[16]byte)(&f.ID), &f.Name, &f.FlowName, (*[16]byte)(&f.DeploymentID), &f.DeploymentName,
			&f.DeploymentVersion, &f.WorkQueue, &f.Tags, &params, &stateType, &f.State.Name, &f.State.Timestamp, &f.State.Message,
			&f.ScheduledAt, &f.StartedAt, &f.EndedAt, &f.RunCount, &parentTask, &parentFlow, &f.AutoScheduled, &result,
			&metrics, &f.TaskCount, &f.CreatedAt, &f.UpdatedAt); err != nil {
			return nil, fmt.Errorf("scan flow run: %w", err)
		}
		f.ParentTaskRunID, f.ParentFlowRunID = uuidOrNil(parentTask), uuidOrNil(parentFlow)
		f.State.Type = domain.StateType(stateType)
		f.Parameters, f.Result, f.Metrics = params, rawOrNil(result), metrics
		f.Tags = nonNil(f.Tags)
		items = append(items, f)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read flow runs: %w", err)
	}
	return items, nil
}

// RunGet returns one flow run with its task runs.
func (r *Reader) RunGet(ctx context.Context, id uuid.UUID) (FlowRun, error) {
	rows, err := r.pool.Query(ctx, `SELECT `+flowRunColumnsSelect+` FROM flow_runs WHERE id = $1`, id)
	if err != nil {
		return FlowRun{}, fmt.Errorf("get run: %w", err)
	}
	runs, err := scanFlowRuns(rows)
	if err != nil {
		return FlowRun{}, err
	}
	if len(runs) == 0 {
		return FlowRun{}, domain.Errorf(domain.CodeNotFound, "flow run %s not found", id)
	}
	run := runs[0]
	if run.TaskRuns, err = r.taskRuns(ctx, id); err != nil {
		return FlowRun{}, err
	}
	return run, nil
}

// taskRunColumnsSelect are the columns of task_runs a TaskRun shows, in
// the table's order.
var taskRunColumnsSelect = taskRunsTable.list("task", "created_position", "stream_version")

func (r *Reader) taskRuns(ctx context.Context, flowRunID uuid.UUID) ([]TaskRun, error) {
	rows, err := r.pool.Query(ctx, `SELECT `+taskRunColumnsSelect+` FROM task_runs WHERE flow_run_id = $1 ORDER BY created_position`, flowRunID)
	if err != nil {
		return nil, fmt.Errorf("get task runs: %w", err)
	}
	defer rows.Close()
	items := []TaskRun{}
	for rows.Next() {
		var t TaskRun
		var stateType string
		var result []byte
		if err := rows.Scan(&t.ID, &t.FlowRunID, &t.TaskName, &t.Kind, &t.DependsOn, &t.Tags, &stateType, &t.State.Name, &t.State.Timestamp,
			&t.State.Message, &t.RunCount, &t.StartedAt, &t.EndedAt, &t.RetryAt, &result, &t.Outputs, &t.Metrics, &t.Error, &t.ExitCode, &t.CacheKey,
			&t.ChildFlowRunID, &t.CreatedAt, &t.UpdatedAt); err != nil {
			return nil, fmt.Errorf("scan task run: %w", err)
		}
		t.State.Type = domain.StateType(stateType)
		t.Result = rawOrNil(result)
		t.DependsOn, t.Tags = nonNil(t.DependsOn), nonNil(t.Tags)
		items = append(items, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read task runs: %w", err)
	}
	return items, nil
}

// RunGraph returns a flow run's task runs as nodes and their dependencies as
// edges.
func (r *Reader) RunGraph(ctx context.Context, id uuid.UUID) (Graph, error) {
	var exists bool
	if err := r.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM flow_runs WHERE id = $1)`, id).Scan(&exists); err != nil {
		return Graph{}, fmt.Errorf("get run: %w", err)
	}
	if !exists {
		return Graph{}, domain.Errorf(domain.CodeNotFound, "flow run %s not found", id)
	}
	tasks, err := r.taskRuns(ctx, id)
	if err != nil {
		return Graph{}, err
	}
	return graphOf(id, tasks), nil
}

func graphOf(id uuid.UUID, tasks []TaskRun) Graph {
	g := Graph{FlowRunID: id, Nodes: make([]GraphNode, 0, len(tasks)), Edges: []GraphEdge{}}
	byName := make(map[string]uuid.UUID, len(tasks))
	for _, t := range tasks {
		byName[t.TaskName] = t.ID
		g.Nodes = append(g.Nodes, GraphNode{ID: t.ID, TaskName: t.TaskName, Kind: t.Kind, State: t.State,
			RunCount: t.RunCount, StartedAt: t.StartedAt, EndedAt: t.EndedAt})
	}
	for _, t := range tasks {
		for _, dep := range t.DependsOn {
			if from, ok := byName[dep]; ok {
				g.Edges = append(g.Edges, GraphEdge{From: from, To: t.ID, FromTask: dep, ToTask: t.TaskName})
			}
		}
	}
	return g
}

// Cursors are opaque to clients: base64 of "key|uuid".
func encodeCursor(key string, id uuid.UUID) string {
	return base64.RawURLEncoding.EncodeToString([]byte(key + "|" + id.String()))
}

func decodeCursor(c string) (string, uuid.UUID, error) {
	bad := domain.Invalid("cursor", "not a cursor from this list")
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return "", uuid.Nil, bad
	}
	key, idText, ok := strings.Cut(string(b), "|")
	id, err := uuid.Parse(idText)
	if !ok || err != nil {
		return "", uuid.Nil, bad
	}
	return key, id, nil
}

// checkpointAt resolves a reference to a place in the log: a checkpoint
// "TXID-POSITION" or the position of an event.
func (r *Reader) checkpointAt(ctx context.Context, field, s string) (eventstore.Checkpoint, error) {
	if pos, err := strconv.ParseInt(s, 10, 64); err == nil {
		if pos <= 0 {
			return eventstore.Checkpoint{}, nil
		}
		cp, err := r.store.CheckpointAt(ctx, r.pool, pos)
		if domain.ErrorCode(err) == domain.CodeNotFound {
			return eventstore.Checkpoint{}, domain.Invalid(field, "no event at position %d", pos)
		}
		return cp, err
	}
	cp, err := eventstore.ParseCheckpoint(s)
	if err != nil {
		return cp, domain.Invalid(field, "must be a log position or a cursor such as 812-4051, got %q", s)
	}
	return cp, nil
}

// uuidOrNil is a nullable uuid column as a pointer.
func uuidOrNil(u pgtype.UUID) *uuid.UUID {
	if !u.Valid {
		return nil
	}
	id := uuid.UUID(u.Bytes)
	return &id
}

// RunIDsByName returns the ids of the runs named exactly name, newest
// first, at most limit of them: the API accepts a run's name wherever it
// takes its id.
func (r *Reader) RunIDsByName(ctx context.Context, name string, limit int) ([]uuid.UUID, error) {
	rows, err := r.pool.Query(ctx, `SELECT id FROM flow_runs WHERE name = $1 ORDER BY scheduled_at DESC, id DESC LIMIT $2`, name, limit)
	if err != nil {
		return nil, fmt.Errorf("find runs named %q: %w", name, err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
}

// DeploymentIDByName returns the id of the live deployment that holds name,
// from the write side's table of names (a name is held by one deployment at
// a time); false when none does.
func (r *Reader) DeploymentIDByName(ctx context.Context, name string) (uuid.UUID, bool, error) {
	var id uuid.UUID
	err := r.pool.QueryRow(ctx, `SELECT deployment_id FROM deployment_names WHERE name = $1`, name).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return uuid.Nil, false, nil
	}
	if err != nil {
		return uuid.Nil, false, fmt.Errorf("find the deployment named %q: %w", name, err)
	}
	return id, true, nil
}
