package domain_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/ordoflow/ordo/domain"
)

// checkParsed fails unless err is nil or an invalid *domain.Error, and, for a
// parsed spec, unless it survives a JSON round trip unchanged.
func checkParsed(t *testing.T, d domain.DeploymentSpec, err error) {
	t.Helper()
	if err != nil {
		var e *domain.Error
		if !errors.As(err, &e) || e.Code != domain.CodeInvalid {
			t.Fatalf("error %v (%T) is not an invalid *domain.Error", err, err)
		}
		return
	}
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatalf("marshal a parsed spec: %v", err)
	}
	again, err := domain.ParseDeployment(b)
	if err != nil {
		t.Fatalf("reparse %s: %v", b, err)
	}
	if b2, _ := json.Marshal(again); string(b2) != string(b) {
		t.Fatalf("round trip changed the spec:\n%s\n%s", b, b2)
	}
	d.Flow.TopoOrder()
	d.Flow.Downstream()
	for _, task := range d.Flow.Tasks {
		task.RetryDelay(3, 0.5)
		domain.CacheKey(task, d.Parameters, nil)
	}
	if d.Schedule != nil {
		d.Schedule.Next(time.Date(2026, 3, 29, 0, 0, 0, 0, time.UTC), 3)
		d.Schedule.Describe()
	}
}

func FuzzParseDeployment(f *testing.F) {
	f.Add([]byte(designJSON))
	f.Add([]byte(`{"name":"d","flow":{"name":"f","tasks":[{"name":"a","handler":"h"}]}}`))
	f.Add([]byte(`{"name":"d","schedule":{"cron":"30 2 * * *","timezone":"Europe/Paris"},"flow":{"name":"f","tasks":[{"name":"a","command":["x"],"retry_delay_seconds":[1,5],"cache":{"key":"{{parameters.t}}"}}]}}`))
	f.Add([]byte(`{"name":"d","parameters":{"n":1},"parameters_schema":{"type":"object","properties":{"n":{"type":"integer","$ref":"#/$defs/x"}},"$defs":{"x":{}}},"flow":{"name":"f","tasks":[{"name":"a","deployment":"e"}]}}`))
	f.Add([]byte(`{"name":"d","flow":{"name":"f","tasks":[{"name":"a","command":["x"],"depends_on":["b"]},{"name":"b","command":["x"],"depends_on":["a"]}]}}`))
	f.Add([]byte(`{"name":"d","flow":{"name":"f","tasks":[{"name":"a","command":["x"],"retires":3}]}}`))
	f.Add([]byte(`{"name":"d","parameters_schema":{"$ref":"file:///etc/passwd"},"flow":{"name":"f","tasks":[]}}`))
	f.Add([]byte(`{"name":"d","schedule":{"interval_seconds":1e308,"anchor":"0001-01-01T00:00:00Z"},"flow":null}`))
	f.Add([]byte(`{"name":"d"} trailing`))
	f.Add([]byte(`[1, 2, 3]`))
	f.Add([]byte(`{"name":`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := domain.ParseDeployment(data)
		checkParsed(t, d, err)
	})
}

func FuzzParseDeploymentYAML(f *testing.F) {
	f.Add([]byte(designYAML))
	f.Add([]byte(designJSON))
	f.Add([]byte("name: d\nflow:\n  name: f\n  tasks:\n    - {name: a, handler: h, retry_delay_seconds: [1, 2]}\n"))
	f.Add([]byte("name: d\nschedule: {cron: '0 * * * *', timezone: Asia/Tokyo}\nflow: {name: f, tasks: [{name: a, command: [x], cache: {key: none}}]}\n"))
	f.Add([]byte("name: &a d\nflow: {name: *a, tasks: [{name: *a, command: [*a]}]}\n"))
	f.Add([]byte("name: d\nname: d\n"))
	f.Add([]byte("- a\n- b\n"))
	f.Add([]byte("name: [\n"))
	f.Add([]byte("? [a, b]\n: c\n"))
	f.Add([]byte("---\n...\n"))
	f.Add([]byte("{"))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := domain.ParseDeploymentYAML(data)
		checkParsed(t, d, err)
	})
}

func FuzzSchedule(f *testing.F) {
	f.Add("*/5 * * * *", "")
	f.Add("30 2 * * *", "Europe/Paris")
	f.Add("0 0 29 2 *", "Australia/Lord_Howe")
	f.Add("@monthly", "America/Sao_Paulo")
	f.Add("0 */2 * * 1-5", "Asia/Kolkata")
	f.Add("@every 1h", "UTC")
	f.Add("CRON_TZ=UTC * * * * *", "")
	f.Add("0 0 31 2 *", "")
	f.Add("*/0 * * * *", "")
	f.Add("1-2-3 * * * *", "Local")
	f.Add("", "../../etc/passwd")
	f.Fuzz(func(t *testing.T, cron, tz string) {
		s := domain.Schedule{Cron: cron, Timezone: tz}
		err := s.Validate()
		s.Describe()
		if err != nil {
			var e *domain.Error
			if !errors.As(err, &e) || e.Code != domain.CodeInvalid {
				t.Fatalf("error %v (%T) is not an invalid *domain.Error", err, err)
			}
			s.Next(time.Date(2026, 10, 24, 0, 0, 0, 0, time.UTC), 3)
			return
		}
		after := time.Date(2026, 10, 24, 0, 0, 0, 0, time.UTC)
		prev := after
		for _, next := range s.Next(after, 5) {
			if !next.After(prev) {
				t.Fatalf("%q in %q: %v does not come after %v", cron, tz, next, prev)
			}
			prev = next
		}
	})
}
