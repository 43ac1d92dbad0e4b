package api

// The automation paths and schemas of the OpenAPI document.

var automationRef = obj{"name": "id", "in": "path", "required": true, "schema": str,
	"description": "the automation's id (a UUID) or its name; a name no live automation holds is 404 not_found"}

var automationSpecProps = obj{
	"name":        str,
	"description": omitted(str),
	"trigger": object([]string{"type"}, obj{
		"type": obj{"type": "string", "enum": []string{"state", "running_longer_than", "not_completed_within", "not_started_within", "consecutive_failures"},
			"description": "state: a run reached one of states; running_longer_than: a run has been RUNNING for seconds and still is; not_completed_within: a deployment had no COMPLETED flow run for seconds; not_started_within: a flow run had not started seconds after it was due; consecutive_failures: count flow runs of a deployment in a row ended FAILED or CRASHED"},
		"of":      omitted(obj{"type": "string", "enum": []string{"flow_run", "task_run"}, "description": "state and running_longer_than only (required there)"}),
		"states":  omitted(obj{"type": "array", "items": str, "description": "state only: state types (FAILED) or named states (TimedOut, Late, Retrying, ...)"}),
		"seconds": omitted(obj{"type": "integer", "minimum": 1, "maximum": 366 * 24 * 3600, "description": "running_longer_than, not_completed_within, not_started_within only: the window's length"}),
		"count":   omitted(obj{"type": "integer", "minimum": 1, "description": "consecutive_failures only: failed runs in a row"}),
	}),
	"filter": omitted(object(nil, obj{
		"deployments": omitted(obj{"type": "array", "items": str, "description": "deployment names, with globs (model_*)"}),
		"tags":        omitted(obj{"type": "array", "items": str, "description": "the run has at least one of these tags"}),
		"work_queue":  omitted(str),
		"flow":        omitted(obj{"type": "string", "description": "the flow's name"}),
	})),
	"actions": obj{"type": "array", "minItems": 1, "items": object([]string{"type"}, obj{
		"type":       obj{"type": "string", "enum": []string{"webhook", "slack", "email", "cancel_run", "pause_deployment", "run_deployment"}},
		"url":        omitted(obj{"type": "string", "description": "webhook: where the CloudEvents 1.0 JSON body is POSTed; slack: the incoming-webhook URL"}),
		"secret_env": omitted(obj{"type": "string", "description": "webhook: the server's environment variable holding the HMAC-SHA256 signing secret (never stored or returned)"}),
		"text":       omitted(obj{"type": "string", "description": "slack: the message's text, a Go text/template over the message context (docs/AUTOMATIONS.md); checked when saved"}),
		"to":         omitted(obj{"type": "array", "items": str, "description": "email: recipients, at most 50"}),
		"subject":    omitted(obj{"type": "string", "description": "email: a template, as text"}),
		"body":       omitted(obj{"type": "string", "description": "email: the plain-text body, a template, as text"}),
		"deployment": omitted(obj{"type": "string", "description": "run_deployment: the deployment to run (required); pause_deployment: the one to pause (default: the triggering run's)"}),
		"parameters": omitted(obj{"type": "object", "description": "run_deployment: parameters of the new run, over the deployment's"}),
		"from_run": omitted(obj{"type": "object", "additionalProperties": str,
			"description": "run_deployment: parameter of the new run -> a parameter of the triggering run, or $run_id, $run_name, $deployment"}),
	})},
}

func withAutomations(doc obj) obj {
	paths := doc["paths"].(obj)
	paths["/api/v1/automations"] = obj{
		"post": withBody(op("automationCreate", "create an automation: a trigger, a filter and actions; its name must be free",
			obj{"201": response("created", ref("Automation"))}, idemHeader), obj{"required": true, "content": obj{"application/json": obj{"schema": ref("AutomationSpec")}}}),
		"get": op("automationList", "list automations by name", obj{"200": response("all automations", listOf("Automation"))}),
	}
	paths["/api/v1/automations/{id}"] = obj{
		"get": op("automationGet", "one automation", obj{"200": response("the automation", ref("Automation"))}, automationRef),
		"put": withBody(op("automationUpdate", "replace an automation's spec", obj{"200": response("the automation", ref("Automation"))}, automationRef),
			obj{"required": true, "content": obj{"application/json": obj{"schema": ref("AutomationSpec")}}}),
		"delete": op("automationDelete", "delete an automation; its firings and deliveries stay", obj{"204": obj{"description": "deleted"}}, automationRef),
	}
	paths["/api/v1/automations/{id}/pause"] = obj{"post": op("automationPause", "stop an automation firing", obj{"200": response("the automation", ref("Automation"))}, automationRef, idemHeader)}
	paths["/api/v1/automations/{id}/resume"] = obj{"post": op("automationResume", "let it fire again, for events after this", obj{"200": response("the automation", ref("Automation"))}, automationRef, idemHeader)}
	paths["/api/v1/automations/{id}/test"] = obj{"post": op("automationTest", "fire the automation now with a synthetic event, delivered like any other firing",
		obj{"202": response("the firing, whose delivery is under way", object([]string{"automation_id", "firing_id"}, obj{"automation_id": str, "firing_id": obj{"type": "string", "description": "also the Ordo-Idempotency-Key its receivers get"}}))},
		automationRef, idemHeader)}
	paths["/api/v1/automations/{id}/deliveries"] = obj{"get": op("automationDeliveries", "the automation's latest deliveries, newest first, each with its attempts",
		obj{"200": response("the deliveries", listOf("Delivery"))}, automationRef,
		qparam("limit", "how many, 1 to 500 (default 100)", obj{"type": "integer", "minimum": 1, "maximum": 500}))}
	paths["/api/v1/automations/{id}/deliveries/{firing}/{action}/retry"] = obj{"post": op("deliveryRetry",
		"re-queue a dead delivery with a fresh budget of attempts: the same firing id (so the same Ordo-Idempotency-Key), its attempts numbered on after the earlier ones; 409 conflict naming its status when it is not dead",
		obj{"202": response("the delivery, pending again", ref("Delivery"))}, automationRef,
		obj{"name": "firing", "in": "path", "required": true, "schema": str, "description": "the firing's id"},
		obj{"name": "action", "in": "path", "required": true, "schema": obj{"type": "integer", "minimum": 0}, "description": "the action's index in the automation's actions"},
		idemHeader)}
	paths["/api/v1/runs/{id}/firings"] = obj{"get": op("runFirings", "the automations fired for the run (by its events or its task runs'), oldest first, each with its deliveries",
		obj{"200": response("the firings", listOf("RunFiring"))}, runRef)}

	schemas := doc["components"].(obj)["schemas"].(obj)
	schemas["AutomationSpec"] = object([]string{"name", "trigger", "actions"}, automationSpecProps)
	props := obj{"id": str, "paused": obj{"type": "boolean"}, "version": obj{"type": "integer"}, "created_at": dateTime, "updated_at": dateTime}
	for k, v := range automationSpecProps {
		props[k] = v
	}
	schemas["Automation"] = object([]string{"id", "name", "trigger", "actions", "paused", "version", "created_at", "updated_at"}, props)
	window := object([]string{"since"}, obj{
		"since":           obj{"type": "string", "format": "date-time", "description": "when the window opened: running since, due at, last completion or the automation's creation, first failure of the streak"},
		"deadline":        omitted(obj{"type": "string", "format": "date-time", "description": "since + seconds: when it fired"}),
		"seconds":         omitted(obj{"type": "integer"}),
		"count":           omitted(obj{"type": "integer", "description": "consecutive_failures: failed runs in a row"}),
		"deployment_id":   omitted(str),
		"deployment_name": omitted(str),
	})
	window["description"] = "absence and count triggers: the window that fired"
	schemas["Delivery"] = object([]string{"firing_id", "action", "action_type", "target", "status", "attempts", "last_status_code", "last_error", "trigger_position", "trigger_type", "trigger_kind", "window", "flow_run_id", "task_run_id", "created_at", "updated_at", "attempt_list"}, obj{
		"firing_id": obj{"type": "string", "description": "the firing, and the Ordo-Idempotency-Key of every attempt"}, "action": obj{"type": "integer"},
		"action_type": str, "target": str, "status": obj{"type": "string", "enum": []string{"pending", "delivered", "dead"}},
		"attempts": obj{"type": "integer"}, "last_status_code": nullable(obj{"type": "integer"}), "last_error": nullable(str),
		"trigger_position": nullable(obj{"type": "integer", "description": "the triggering event's log position; null for a test firing"}),
		"trigger_type":     str,
		"trigger_kind":     obj{"type": "string", "description": "the automation's trigger type when it fired (state, running_longer_than, ...), or test"},
		"window":           nullable(window),
		"flow_run_id":      nullable(str), "task_run_id": nullable(str), "created_at": dateTime, "updated_at": dateTime,
		"attempt_list": obj{"type": "array", "items": object([]string{"attempt", "status_code", "latency_ms", "error", "at"}, obj{
			"attempt": obj{"type": "integer"}, "status_code": nullable(obj{"type": "integer"}), "latency_ms": obj{"type": "number", "format": "double"},
			"error": nullable(str), "at": dateTime,
		})},
	})
	schemas["RunFiring"] = object([]string{"firing_id", "automation_id", "automation_name", "trigger_position", "trigger_type", "task_run_id", "created_at", "deliveries"}, obj{
		"firing_id": obj{"type": "string", "description": "also the Ordo-Idempotency-Key its receivers get"}, "automation_id": str,
		"automation_name":  obj{"type": "string", "description": "the automation's name now (a deleted one's last)"},
		"trigger_position": nullable(obj{"type": "integer"}), "trigger_type": str, "task_run_id": nullable(str), "created_at": dateTime,
		"deliveries": obj{"type": "array", "items": ref("Delivery")},
	})
	return doc
}
