package api

import (
	"encoding/json"
	"net/http"
	"reflect"

	"github.com/labstack/echo/v4"
)

// The OpenAPI 3 document of the API, written by hand. TestOpenAPIMatchesRoutes
// fails when a route is missing from it or it names a route that does not
// exist; TestOpenAPIDocumentIsValidOpenAPI30 checks it against the
// specification's JSON Schema; internal/apicontract holds the tests' requests
// and answers to it. Package client is generated from it (go generate
// ./client after a change).

// obj is a JSON object of the document. Its nil members are left out: the
// specification has no place for null in the document itself (a nil slice
// of required fields would be "required": null, which validators refuse).
type obj map[string]any

func (o obj) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, len(o))
	for k, v := range o {
		if rv := reflect.ValueOf(v); !rv.IsValid() || (rv.Kind() == reflect.Slice || rv.Kind() == reflect.Map) && rv.IsNil() {
			continue
		}
		m[k] = v
	}
	return json.Marshal(m)
}

func ref(name string) obj { return obj{"$ref": "#/components/schemas/" + name} }

func listOf(item string) obj {
	return obj{"type": "object", "required": []string{"items", "next_cursor"}, "properties": obj{
		"items":       obj{"type": "array", "items": ref(item)},
		"next_cursor": obj{"type": "string", "nullable": true, "description": "pass as cursor (or after) for the next page; null on the last page"},
	}}
}

func jsonBody(schema obj) obj {
	return obj{"content": obj{"application/json": obj{"schema": schema}}}
}

func response(desc string, schema obj) obj {
	r := obj{"description": desc}
	if schema != nil {
		r["content"] = obj{"application/json": obj{"schema": schema}}
	}
	return r
}

var errorResponse = obj{"description": "an error", "content": obj{"application/json": obj{"schema": ref("Error")}}}

// op is an operation; its id names the client's method (noun-verb, as
// RunCancel).
func op(id, summary string, ok obj, params ...obj) obj {
	o := obj{"operationId": id, "summary": summary, "responses": obj{"default": errorResponse}}
	for code, r := range ok {
		o["responses"].(obj)[code] = r
	}
	if len(params) > 0 {
		o["parameters"] = params
	}
	return o
}

// bearerScheme is how requests send an API token.
var bearerScheme = obj{"bearer": obj{"type": "http", "scheme": "bearer",
	"description": "an API token (ordo tokens create NAME --scope read|run|admin), required once any token exists: read for GET, run to start, cancel and retry runs, admin for everything else; 401 unauthorized without a valid token, 403 forbidden when its scope is too small"}}

// open marks an operation that needs no token.
func open(o obj) obj {
	o["security"] = []obj{}
	return o
}

func withBody(o obj, body obj) obj {
	o["requestBody"] = body
	return o
}

func qparam(name, desc string, schema obj) obj {
	return obj{"name": name, "in": "query", "description": desc, "schema": schema}
}

var (
	// The {id} of a route takes a name as well (api/resolve.go).
	deploymentRef = obj{"name": "id", "in": "path", "required": true, "schema": str,
		"description": "the deployment's id (a UUID) or its name; a name no live deployment holds is 404 not_found"}
	runRef = obj{"name": "id", "in": "path", "required": true, "schema": str,
		"description": "the run's id (a UUID) or its name; a name several runs carry is 409 conflict, its message and details listing their ids; a name no run carries is 404 not_found"}
	queueParam = obj{"name": "name", "in": "path", "required": true, "schema": obj{"type": "string"}}
	idemHeader = obj{"name": "Idempotency-Key", "in": "header", "description": "a retried POST with the same key gets the first response again; keys are per API token, so two tokens never share an answer", "schema": obj{"type": "string", "maxLength": 255}}
	str        = obj{"type": "string"}
	strList    = obj{"type": "array", "items": obj{"type": "string"}}
	dateTime   = obj{"type": "string", "format": "date-time"}
	limitParam = qparam("limit", "page size, 1 to 200 (default 50)", obj{"type": "integer", "minimum": 1, "maximum": 200})
)

// goRaw asks the Go client generator to keep the value as the server sent
// it (json.RawMessage, null included), members in their order.
func goRaw(s obj) obj {
	s["x-go-type"] = "json.RawMessage"
	s["x-go-type-skip-optional-pointer"] = true
	return s
}

// omitted marks a member the server leaves out when it is empty: the Go
// client holds it as a plain value, the zero value for absent.
func omitted(s obj) obj {
	c := obj{"x-go-type-skip-optional-pointer": true}
	for k, v := range s {
		c[k] = v
	}
	return c
}

// metricsSchema is a run's or task run's metrics: name -> number, {} when none.
// The parameters of an output's bytes and of its headers.
var (
	outputIDParam   = obj{"name": "id", "in": "path", "required": true, "schema": obj{"type": "string", "format": "uuid"}, "description": "the task run's id"}
	outputNameParam = obj{"name": "name", "in": "path", "required": true, "schema": str, "description": "the output's name, relative to ORDO_OUTPUT_DIR; a name with slashes is sent as it is (each element percent-escaped) or with its slashes escaped"}
	downloadParam   = qparam("download", "true: Content-Disposition: attachment, with the file name", obj{"type": "boolean"})
)

var metricsSchema = obj{"type": "object", "additionalProperties": obj{"type": "number", "format": "double"}, "description": "name -> number; {} when none"}

// anyJSON is any JSON value: a result.
var anyJSON = goRaw(obj{"nullable": true})

func nullable(s obj) obj {
	c := obj{}
	for k, v := range s {
		c[k] = v
	}
	c["nullable"] = true
	return c
}

// object is an object schema; an empty required list is left out, as the
// specification wants at least one name there.
func object(required []string, props obj) obj {
	o := obj{"type": "object", "properties": props}
	if len(required) > 0 {
		o["required"] = required
	}
	return o
}

var openAPIDocument = withAutomations(obj{
	"openapi": "3.0.3",
	"info": obj{
		"title":       "Ordo API",
		"version":     "1",
		"description": "Ordo, a workflow orchestrator whose every state change is an event in PostgreSQL. Errors are always {\"error\": {\"code\", \"message\", \"details\"}}. River's own UI, when the server has a River client, is served under /riverui/ (not part of this API).",
	},
	// Once any API token exists, every request needs one (see api.Auth),
	// but the health probes.
	"security": []obj{{"bearer": []string{}}},
	"paths": obj{
		"/healthz": obj{"get": open(op("health", "the process serves HTTP", obj{"200": response("ok", object([]string{"status"}, obj{"status": obj{"type": "string", "enum": []string{"ok"}}}))}))},
		"/readyz": obj{"get": open(op("ready", "the database answers, the schema is current and the read models are caught up", obj{"200": response("ready", object([]string{"status", "checks"}, obj{
			"status": obj{"type": "string", "enum": []string{"ready"}},
			"checks": obj{"type": "object", "description": "database, migrations, projection: ok, or how far behind", "additionalProperties": str},
		}))}))},
		"/metrics":             obj{"get": op("metrics", "Prometheus metrics", obj{"200": obj{"description": "metrics in the Prometheus text format"}})},
		"/api/v1/openapi.json": obj{"get": op("openAPI", "this document", obj{"200": response("the OpenAPI document", obj{"type": "object"})})},
		"/api/v1/deployments": obj{
			"post": withBody(op("deploymentSave", "create a deployment, or save a new version of the one with this name",
				obj{"201": response("created", ref("Deployment")), "200": response("updated (or unchanged)", ref("Deployment"))}, idemHeader),
				obj{"required": true, "content": obj{"application/json": obj{"schema": ref("DeploymentSpec")}, "application/yaml": obj{"schema": ref("DeploymentSpec")}}}),
			"get": op("deploymentList", "list deployments by name", obj{"200": response("a page", listOf("Deployment"))},
				qparam("name", "part of the name", str), qparam("tag", "has this tag", str), qparam("work_queue", "runs go to this queue", str),
				limitParam, qparam("cursor", "next_cursor of the previous page", str)),
		},
		"/api/v1/deployments/{id}": obj{
			"get":    op("deploymentGet", "one deployment with its next scheduled runs", obj{"200": response("the deployment", ref("Deployment"))}, deploymentRef),
			"delete": op("deploymentDelete", "delete a deployment; its runs stay", obj{"204": obj{"description": "deleted"}}, deploymentRef),
		},
		"/api/v1/deployments/{id}/pause":  obj{"post": op("deploymentPause", "turn the schedule off", obj{"200": response("the deployment", ref("Deployment"))}, deploymentRef, idemHeader)},
		"/api/v1/deployments/{id}/resume": obj{"post": op("deploymentResume", "turn the schedule on", obj{"200": response("the deployment", ref("Deployment"))}, deploymentRef, idemHeader)},
		"/api/v1/deployments/{id}/runs": obj{"post": withBody(op("runCreate", "start a run now or at scheduled_at, with parameter overrides and an optional name",
			obj{"201": response("the run", ref("FlowRun"))}, deploymentRef, idemHeader), jsonBody(nullable(object(nil, obj{
			"scheduled_at":    dateTime,
			"parameters":      obj{"type": "object", "additionalProperties": true},
			"idempotency_key": str,
			"name":            str,
		}))))},
		"/api/v1/runs": obj{"get": op("runList", "list flow runs: by default the runs that started or are due, newest first by scheduled time; with upcoming=true the runs scheduled for later, soonest first", obj{"200": response("a page", listOf("FlowRun"))},
			qparam("upcoming", "false (default): runs that are due (scheduled at or before now: started, ended or waiting for a worker), newest first; true: only upcoming runs, scheduled for a time still to come (SCHEDULED, or cancelled before it), soonest first; include: both, newest first; in any case", obj{"type": "string", "pattern": "^([Ff][Aa][Ll][Ss][Ee]|[Tt][Rr][Uu][Ee]|[Ii][Nn][Cc][Ll][Uu][Dd][Ee])$", "default": "false"}),
			qparam("state", "state types, comma-separated or repeated", strList),
			qparam("deployment", "deployment id or name", str),
			qparam("tag", "has all these tags", strList),
			qparam("name", "part of the run name", str),
			qparam("work_queue", "work queue", str),
			qparam("since", "scheduled at or after", dateTime),
			qparam("until", "scheduled before", dateTime),
			limitParam, qparam("cursor", "next_cursor of the previous page", str))},
		"/api/v1/runs/{id}":        obj{"get": op("runGet", "one flow run with its task runs", obj{"200": response("the run", ref("FlowRun"))}, runRef)},
		"/api/v1/runs/{id}/graph":  obj{"get": op("runGraph", "the run's task runs and their dependencies", obj{"200": response("the graph", ref("Graph"))}, runRef)},
		"/api/v1/runs/{id}/events": obj{"get": op("runEvents", "the audit trail: every event of the run and its task runs, in log order", obj{"200": response("all events", listOf("Event"))}, runRef)},
		"/api/v1/runs/{id}/history": obj{"get": op("runHistory", "the run as it was at a past time or log position, folded from its events",
			obj{"200": response("the run then", ref("History"))}, runRef,
			obj{"name": "at", "in": "query", "required": true, "description": "an RFC 3339 time, an event position, or an event cursor TXID-POSITION", "schema": str})},
		"/api/v1/runs/{id}/cancel": obj{"post": op("runCancel", "cancel a run (501 until the server runs flows)", obj{"200": response("the run", ref("FlowRun"))}, runRef, idemHeader)},
		"/api/v1/runs/{id}/retry":  obj{"post": op("runRetry", "run the failed part of a run again (501 until the server runs flows)", obj{"200": response("the run", ref("FlowRun"))}, runRef, idemHeader)},
		"/api/v1/runs/{id}/outputs": obj{"get": op("runOutputs", "the files the run's task runs left in ORDO_OUTPUT_DIR, by task and name, each with its download URL",
			obj{"200": response("all outputs", listOf("Output"))}, runRef)},
		"/api/v1/task-runs/{id}/outputs/{name}": obj{"head": op("taskRunOutputHead", "the headers GET would answer with (Content-Length, ETag, Content-Type, Content-Range for a Range), without the bytes",
			obj{"200": obj{"description": "the output's headers"}, "206": obj{"description": "the range's headers"}, "304": obj{"description": "the output is the one named by If-None-Match"}},
			outputIDParam, outputNameParam, downloadParam), "get": op("taskRunOutput", "the bytes of one output: Content-Type from its media type (X-Content-Type-Options: nosniff, and Content-Security-Policy: sandbox so that an HTML or SVG file runs no script in the UI's origin), ETag the quoted sha256 (If-None-Match: 304), one byte Range (206 with Content-Range; 416 range_not_satisfiable past the end); 501 without a blob store",
			obj{
				"200": obj{"description": "the output's bytes", "content": obj{"*/*": obj{"schema": obj{"type": "string", "format": "binary"}}}},
				"206": obj{"description": "the bytes of the range asked for", "content": obj{"*/*": obj{"schema": obj{"type": "string", "format": "binary"}}}},
				"304": obj{"description": "the output is the one named by If-None-Match"},
			},
			outputIDParam, outputNameParam, downloadParam)},
		"/api/v1/deployments/{id}/metrics": obj{"get": op("deploymentMetrics", "the metric series of a deployment: its last runs that have metrics, oldest first, each with the union of its task runs' metrics",
			obj{"200": response("the series", listOf("MetricPoint"))}, deploymentRef,
			qparam("limit", "how many runs, 1 to 1000 (default 100)", obj{"type": "integer", "minimum": 1, "maximum": 1000}))},
		"/api/v1/events": obj{"get": op("eventList", "the global event log, in log order, read gap-free: an event shows once no earlier one can still commit. next_cursor is set on a full page; a shorter page ends what can be read now (a transaction still running may hold back the events after it), and a reader goes on later from its last event's cursor", obj{"200": response("a page", listOf("Event"))},
			qparam("after", "an event's cursor (or position): events after it", str),
			qparam("type", "event types, comma-separated or repeated", strList),
			limitParam)},
		"/api/v1/runs/{id}/logs": obj{"get": op("runLogs", "the run's task log lines, in order; with follow=true a text/event-stream of every line (event: log, id: the line id), the stored ones and then new ones, ending with event: end when the run is terminal",
			obj{"200": obj{"description": "a page of lines, or the event stream", "content": obj{
				"application/json":  obj{"schema": listOf("LogLine")},
				"text/event-stream": obj{"schema": str},
			}}}, runRef,
			qparam("task", "only this task: its name or task run id", str),
			qparam("after", "lines after this line id (also the Last-Event-ID header when following)", obj{"type": "integer", "minimum": 0}),
			qparam("limit", "page size, 1 to 5000 (default 500)", obj{"type": "integer", "minimum": 1, "maximum": 5000}),
			qparam("follow", "stream lines as Server-Sent Events until the run ends", obj{"type": "boolean"}))},
		"/api/v1/work-queues": obj{
			"get": op("workQueueList", "list work queues by name: depth, running, paused, concurrency limit and slots in use, online workers", obj{"200": response("a page", listOf("WorkQueue"))},
				limitParam, qparam("cursor", "next_cursor of the previous page", str)),
			"post": withBody(op("workQueueSave", "create or update a work queue's settings",
				obj{"201": response("created", ref("WorkQueue")), "200": response("updated", ref("WorkQueue"))}, idemHeader),
				obj{"required": true, "content": obj{"application/json": obj{"schema": object([]string{"name"}, obj{
					"name":              str,
					"concurrency_limit": nullable(obj{"type": "integer", "minimum": 1}),
				})}}}),
		},
		"/api/v1/work-queues/{name}/pause": obj{"post": op("workQueuePause", "pause a work queue: workers take none of its task runs until it is resumed (River's queue pause)",
			obj{"200": response("the queue", ref("WorkQueue"))}, queueParam, idemHeader)},
		"/api/v1/work-queues/{name}/resume": obj{"post": op("workQueueResume", "resume a paused work queue",
			obj{"200": response("the queue", ref("WorkQueue"))}, queueParam, idemHeader)},
	},
	"components": obj{"securitySchemes": bearerScheme, "schemas": obj{
		"Error": object([]string{"error"}, obj{"error": object([]string{"code", "message", "details"}, obj{
			"code":    obj{"type": "string", "enum": []string{"invalid", "not_found", "conflict", "unauthorized", "forbidden", "too_large", "unavailable", "internal", "not_implemented", "method_not_allowed", "range_not_satisfiable"}},
			"message": obj{"type": "string", "description": "the whole error as a person reads it, every detail included"},
			"details": obj{"type": "array", "description": "the same problems field by field, for programs", "items": object([]string{"field", "message"}, obj{"field": str, "message": str})},
		})}),
		"State": object([]string{"type", "name", "timestamp", "message"}, obj{
			"type":      obj{"type": "string", "enum": []string{"SCHEDULED", "PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLING", "CANCELLED", "CRASHED", "PAUSED"}},
			"name":      str,
			"timestamp": dateTime,
			"message":   str,
		}),
		"DeploymentSpec": obj{"type": "object", "description": "name, description, work_queue, tags, parameters, parameters_schema, schedule, flow {name, tasks}, concurrency_limit, concurrency_policy, catch_up, paused, notifications [{on, slack | webhook + secret_env | email}] (docs/AUTOMATIONS.md); unknown fields are refused", "required": []string{"name", "flow"}},
		"Deployment": object([]string{"id", "name", "version", "description", "work_queue", "tags", "parameters", "schedule", "paused", "flow", "next_runs", "created_at", "updated_at"}, obj{
			"id": obj{"type": "string", "format": "uuid"}, "name": str, "version": obj{"type": "integer"}, "description": str,
			"work_queue": str, "tags": strList, "parameters": obj{"type": "object"}, "schedule": nullable(obj{"type": "object"}),
			"paused": obj{"type": "boolean"}, "flow": obj{"type": "object"}, "spec": ref("DeploymentSpec"),
			"next_runs":  obj{"type": "array", "items": object([]string{"id", "scheduled_at"}, obj{"id": str, "scheduled_at": dateTime})},
			"created_at": dateTime, "updated_at": dateTime,
		}),
		"FlowRun": object([]string{"id", "name", "deployment_id", "deployment_name", "work_queue", "tags", "parameters", "state", "scheduled_at", "started_at", "ended_at", "run_count", "parent_task_run_id", "result", "metrics"}, obj{
			"id": str, "name": str, "flow_name": str, "deployment_id": str, "deployment_name": str, "deployment_version": obj{"type": "integer"},
			"work_queue": str, "tags": strList, "parameters": obj{"type": "object"}, "state": ref("State"),
			"scheduled_at": dateTime, "started_at": nullable(dateTime), "ended_at": nullable(dateTime), "run_count": obj{"type": "integer"},
			"parent_task_run_id": nullable(str), "parent_flow_run_id": nullable(str), "auto_scheduled": obj{"type": "boolean"},
			"result": anyJSON, "metrics": metricsSchema, "task_count": obj{"type": "integer"}, "created_at": dateTime, "updated_at": dateTime,
			"task_runs": omitted(obj{"type": "array", "items": ref("TaskRun"), "description": "only in GET /runs/{id}"}),
		}),
		"TaskRun": object([]string{"id", "flow_run_id", "task_name", "state", "run_count", "started_at", "ended_at", "result", "outputs", "metrics", "error", "cache_key", "depends_on"}, obj{
			"id": str, "flow_run_id": str, "task_name": str, "kind": str, "state": ref("State"), "run_count": obj{"type": "integer"},
			"started_at": nullable(dateTime), "ended_at": nullable(dateTime), "retry_at": nullable(dateTime), "result": anyJSON,
			"outputs": obj{"type": "array", "items": ref("TaskOutput"), "description": "the files of the attempt that completed it, or of its cache source"},
			"metrics": metricsSchema,
			"error":   nullable(str), "exit_code": nullable(obj{"type": "integer"}), "cache_key": nullable(str), "depends_on": strList, "tags": strList,
			"child_flow_run_id": nullable(str), "created_at": dateTime, "updated_at": dateTime,
		}),
		"Graph": object([]string{"flow_run_id", "nodes", "edges"}, obj{
			"flow_run_id": str,
			"nodes": obj{"type": "array", "items": object([]string{"id", "task_name", "state"}, obj{
				"id": str, "task_name": str, "kind": str, "state": ref("State"), "run_count": obj{"type": "integer"}, "started_at": nullable(dateTime), "ended_at": nullable(dateTime),
			})},
			"edges": obj{"type": "array", "items": object([]string{"from", "to"}, obj{
				"from": obj{"type": "string", "description": "task run id of the upstream task"}, "to": str, "from_task": str, "to_task": str,
			})},
		}),
		"Event": object([]string{"position", "stream_id", "stream_type", "version", "type", "data", "metadata", "recorded_at"}, obj{
			"position": obj{"type": "integer"}, "transaction_id": omitted(str), "cursor": omitted(str), "stream_id": str,
			"stream_type": obj{"type": "string", "enum": []string{"deployment", "flow_run", "task_run", "automation", "automation_firing", "retention"}},
			"version":     obj{"type": "integer"}, "type": str, "data": goRaw(obj{"type": "object"}),
			"metadata":      object([]string{"actor", "reason", "causation_id", "correlation_id"}, obj{"actor": str, "reason": str, "causation_id": str, "correlation_id": str}),
			"recorded_at":   dateTime,
			"flow_run_id":   omitted(obj{"type": "string", "description": "events of flow runs and task runs: the run"}),
			"flow_run_name": omitted(obj{"type": "string", "description": "events of flow runs and task runs: the run's name"}),
			"task_name":     omitted(obj{"type": "string", "description": "events of task runs: the task"}),
			"from_state":    obj{"allOf": []obj{ref("State")}, "description": "events of flow runs and task runs: the state before the event; absent for the first event of its stream"},
			"to_state":      obj{"allOf": []obj{ref("State")}, "description": "events of flow runs and task runs: the state after the event"},
		}),
		"LogLine": object([]string{"id", "timestamp", "task_run_id", "task_name", "attempt", "stream", "level", "message"}, obj{
			"id": obj{"type": "integer"}, "timestamp": dateTime, "task_run_id": str, "task_name": str, "attempt": obj{"type": "integer"},
			"stream":  obj{"type": "string", "enum": []string{"stdout", "stderr", "system"}},
			"level":   nullable(str),
			"message": str,
		}),
		"WorkQueue": object([]string{"name", "depth", "running", "paused", "concurrency_limit", "workers_online", "workers"}, obj{
			"name": str, "depth": obj{"type": "integer", "description": "task runs due and waiting for a worker"},
			"scheduled": obj{"type": "integer", "description": "task runs queued for later"}, "running": obj{"type": "integer"},
			"paused": obj{"type": "boolean"}, "paused_at": nullable(dateTime), "concurrency_limit": nullable(obj{"type": "integer"}),
			"slots_in_use":     nullable(obj{"type": "integer", "description": "with a concurrency limit: slots of task runs running or woken to run"}),
			"waiting_for_slot": obj{"type": "integer", "description": "task runs due that wait for a slot of the concurrency limit"},
			"workers_online":   obj{"type": "integer"},
			"workers": obj{"type": "array", "items": object([]string{"name", "last_heartbeat_at", "running"}, obj{
				"name": str, "hostname": str, "queues": strList, "started_at": dateTime, "last_heartbeat_at": dateTime, "running": obj{"type": "integer"},
			})},
			"created_at": nullable(dateTime), "updated_at": nullable(dateTime),
		}),
		"TaskOutput": object([]string{"name", "sha256", "size", "media_type"}, obj{
			"name": obj{"type": "string", "description": "relative to ORDO_OUTPUT_DIR, with slashes"}, "sha256": obj{"type": "string", "description": "the blob's address: SHA-256 of the content, lower-case hex"},
			"size": obj{"type": "integer", "format": "int64"}, "media_type": str,
		}),
		"Output": object([]string{"task_name", "task_run_id", "name", "sha256", "size", "media_type", "download_url"}, obj{
			"task_name": str, "task_run_id": str,
			"name": obj{"type": "string", "description": "relative to ORDO_OUTPUT_DIR, with slashes"}, "sha256": str,
			"size": obj{"type": "integer", "format": "int64"}, "media_type": str,
			"download_url": obj{"type": "string", "description": "the path of GET /task-runs/{id}/outputs/{name} for it, from the server's root"},
		}),
		"MetricPoint": object([]string{"run_id", "run_name", "time", "state", "metrics"}, obj{
			"run_id": str, "run_name": str, "time": obj{"type": "string", "format": "date-time", "description": "when the run was scheduled"},
			"state": ref("State"), "metrics": metricsSchema,
		}),
		"History": object([]string{"at", "position", "cursor", "event_count", "run"}, obj{
			"at": dateTime, "position": obj{"type": "integer"}, "cursor": str, "event_count": obj{"type": "integer"}, "run": ref("FlowRun"),
		}),
	}},
})

// OpenAPIJSON is the OpenAPI document the server serves at
// /api/v1/openapi.json, indented; the client package is generated from it.
func OpenAPIJSON() ([]byte, error) {
	b, err := json.MarshalIndent(openAPIDocument, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func (s *server) openAPI(c echo.Context) error {
	return c.JSON(http.StatusOK, openAPIDocument)
}
