package projections

import (
	"slices"
	"strings"
)

// column is a column of a read-model table.
type column struct {
	name string
	typ  string // as jsonb_to_recordset is told to read it
	// ifNull is what an insert from a row document writes when the
	// document's value is null (a nil Go slice or map); empty: NULL.
	ifNull string
}

// table is a read-model table and its columns, written here once, in the
// order in which every writer sends a row: the COPYs of the projector and of
// Replay (the binary encoders in copybin.go write their values in this
// order) and the row documents the projector expands with
// jsonb_to_recordset (by JSON name, which is the column name). The readers'
// column lists derive from it too.
type table struct {
	name    string
	columns []column
}

var (
	deploymentsTable = table{"deployments", []column{
		{name: "id", typ: "uuid"},
		{name: "name", typ: "text"},
		{name: "version", typ: "int"},
		{name: "description", typ: "text", ifNull: "''"},
		{name: "work_queue", typ: "text"},
		{name: "tags", typ: "text[]", ifNull: "'{}'"},
		{name: "parameters", typ: "jsonb", ifNull: "'{}'"},
		{name: "schedule", typ: "jsonb"},
		{name: "paused", typ: "boolean"},
		{name: "flow", typ: "jsonb"},
		{name: "spec", typ: "jsonb"},
		{name: "created_at", typ: "timestamptz"},
		{name: "updated_at", typ: "timestamptz"},
		{name: "stream_version", typ: "bigint"},
	}}
	flowRunsTable = table{"flow_runs", []column{
		{name: "id", typ: "uuid"},
		{name: "name", typ: "text"},
		{name: "flow_name", typ: "text"},
		{name: "deployment_id", typ: "uuid"},
		{name: "deployment_name", typ: "text"},
		{name: "deployment_version", typ: "int"},
		{name: "work_queue", typ: "text"},
		{name: "tags", typ: "text[]"},
		{name: "parameters", typ: "jsonb"},
		{name: "state_type", typ: "text"},
		{name: "state_name", typ: "text"},
		{name: "state_timestamp", typ: "timestamptz"},
		{name: "state_message", typ: "text"},
		{name: "scheduled_at", typ: "timestamptz"},
		{name: "started_at", typ: "timestamptz"},
		{name: "ended_at", typ: "timestamptz"},
		{name: "run_count", typ: "int"},
		{name: "parent_task_run_id", typ: "uuid"},
		{name: "parent_flow_run_id", typ: "uuid"},
		{name: "auto_scheduled", typ: "boolean"},
		{name: "result", typ: "jsonb"},
		{name: "metrics", typ: "jsonb", ifNull: "'{}'"},
		{name: "task_count", typ: "int"},
		{name: "created_at", typ: "timestamptz"},
		{name: "updated_at", typ: "timestamptz"},
		{name: "stream_version", typ: "bigint"},
	}}
	taskRunsTable = table{"task_runs", []column{
		{name: "id", typ: "uuid"},
		{name: "flow_run_id", typ: "uuid"},
		{name: "task_name", typ: "text"},
		{name: "kind", typ: "text"},
		{name: "depends_on", typ: "text[]"},
		{name: "tags", typ: "text[]"},
		{name: "task", typ: "jsonb"},
		{name: "state_type", typ: "text"},
		{name: "state_name", typ: "text"},
		{name: "state_timestamp", typ: "timestamptz"},
		{name: "state_message", typ: "text"},
		{name: "run_count", typ: "int"},
		{name: "started_at", typ: "timestamptz"},
		{name: "ended_at", typ: "timestamptz"},
		{name: "retry_at", typ: "timestamptz"},
		{name: "result", typ: "jsonb"},
		{name: "outputs", typ: "jsonb", ifNull: "'[]'"},
		{name: "metrics", typ: "jsonb", ifNull: "'{}'"},
		{name: "error", typ: "text"},
		{name: "exit_code", typ: "int"},
		{name: "cache_key", typ: "text"},
		{name: "child_flow_run_id", typ: "uuid"},
		{name: "created_position", typ: "bigint"},
		{name: "created_at", typ: "timestamptz"},
		{name: "updated_at", typ: "timestamptz"},
		{name: "stream_version", typ: "bigint"},
	}}
	attemptsTable = table{"task_run_attempts", []column{
		{name: "task_run_id", typ: "uuid"},
		{name: "attempt", typ: "int"},
		{name: "flow_run_id", typ: "uuid"},
		{name: "worker", typ: "text", ifNull: "''"},
		{name: "started_at", typ: "timestamptz"},
		{name: "ended_at", typ: "timestamptz"},
		{name: "outcome", typ: "text"},
		{name: "error", typ: "text"},
		{name: "exit_code", typ: "int"},
	}}
	historyTable = table{"state_history", []column{
		{name: "stream_id", typ: "uuid"},
		{name: "version", typ: "bigint"},
		{name: "stream_type", typ: "text"},
		{name: "flow_run_id", typ: "uuid"},
		{name: "position", typ: "bigint"},
		{name: "transaction_id", typ: "bigint"},
		{name: "event_type", typ: "text"},
		{name: "from_type", typ: "text"},
		{name: "from_name", typ: "text"},
		{name: "to_type", typ: "text"},
		{name: "to_name", typ: "text"},
		{name: "message", typ: "text"},
		{name: "actor", typ: "text"},
		{name: "reason", typ: "text"},
		{name: "at", typ: "timestamptz"},
	}}
)

// readModelTables are the tables the projector fills and Replay rebuilds.
var readModelTables = tableNames(deploymentsTable, flowRunsTable, taskRunsTable, attemptsTable, historyTable)

func tableNames(tables ...table) []string {
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = t.name
	}
	return names
}

// names returns the names of the columns, in order, but those left out.
func (t table) names(leftOut ...string) []string {
	names := make([]string, 0, len(t.columns))
	for _, c := range t.columns {
		if !slices.Contains(leftOut, c.name) {
			names = append(names, c.name)
		}
	}
	return names
}

// list is names joined for a select or insert list.
func (t table) list(leftOut ...string) string { return strings.Join(t.names(leftOut...), ", ") }

// recordset is the column definition list of jsonb_to_recordset for rows
// of the table and the extra fields of their documents.
func (t table) recordset(extra ...column) string {
	defs := make([]string, 0, len(t.columns)+len(extra))
	for _, c := range append(t.columns[:len(t.columns):len(t.columns)], extra...) {
		defs = append(defs, c.name+" "+c.typ)
	}
	return strings.Join(defs, ", ")
}

// fromRecordset is the select list that inserts the table's columns from a
// jsonb_to_recordset, with ifNull in place of nulls.
func (t table) fromRecordset() string {
	exprs := make([]string, len(t.columns))
	for i, c := range t.columns {
		exprs[i] = c.name
		if c.ifNull != "" {
			exprs[i] = "coalesce(" + c.name + ", " + c.ifNull + ")"
		}
	}
	return strings.Join(exprs, ", ")
}
