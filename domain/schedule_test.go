package domain_test

import (
	"testing"
	"time"

	"github.com/ordoflow/ordo/domain"
)

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestScheduleNext(t *testing.T) {
	t.Parallel()

	anchor := utc("2026-01-01T00:00:10Z")
	tests := []struct {
		name     string
		schedule domain.Schedule
		after    string
		want     []string // UTC instants
	}{
		{"IntervalWithAnchor", domain.Schedule{IntervalSeconds: 300, Anchor: &anchor}, "2026-03-01T12:03:00Z",
			[]string{"2026-03-01T12:05:10Z", "2026-03-01T12:10:10Z", "2026-03-01T12:15:10Z"}},
		{"IntervalStrictlyAfter", domain.Schedule{IntervalSeconds: 300, Anchor: &anchor}, "2026-03-01T12:05:10Z",
			[]string{"2026-03-01T12:10:10Z", "2026-03-01T12:15:10Z"}},
		{"IntervalBeforeAnchor", domain.Schedule{IntervalSeconds: 300, Anchor: &anchor}, "2025-12-31T23:55:10Z",
			[]string{"2026-01-01T00:00:10Z", "2026-01-01T00:05:10Z"}},
		{"IntervalBeforeAnchorBetweenRuns", domain.Schedule{IntervalSeconds: 300, Anchor: &anchor}, "2025-12-31T23:52:00Z",
			[]string{"2025-12-31T23:55:10Z", "2026-01-01T00:00:10Z"}},
		{"IntervalFraction", domain.Schedule{IntervalSeconds: 1.5, Anchor: &anchor}, "2026-01-01T00:00:10Z",
			[]string{"2026-01-01T00:00:11.5Z", "2026-01-01T00:00:13Z"}},
		{"IntervalDefaultAnchorUTC", domain.Schedule{IntervalSeconds: 300}, "2026-03-01T12:03:00Z",
			[]string{"2026-03-01T12:05:00Z", "2026-03-01T12:10:00Z"}},
		// The default anchor is midnight of 1970-01-01 in Paris (23:00 UTC);
		// days are 86400 s, so in summer time runs fall at 01:00 local.
		{"IntervalDefaultAnchorInTimezone", domain.Schedule{IntervalSeconds: 86400, Timezone: "Europe/Paris"}, "2026-03-28T12:00:00Z",
			[]string{"2026-03-28T23:00:00Z", "2026-03-29T23:00:00Z"}},

		{"CronUTC", domain.Schedule{Cron: "*/5 * * * *"}, "2026-05-01T10:02:30Z",
			[]string{"2026-05-01T10:05:00Z", "2026-05-01T10:10:00Z"}},
		{"CronDescriptor", domain.Schedule{Cron: "@daily", Timezone: "America/New_York"}, "2026-05-01T10:00:00Z",
			[]string{"2026-05-02T04:00:00Z", "2026-05-03T04:00:00Z"}},
		{"CronInTimezone", domain.Schedule{Cron: "0 9 * * 1-5", Timezone: "Asia/Tokyo"}, "2026-05-01T00:30:00Z", // a Friday
			[]string{"2026-05-04T00:00:00Z", "2026-05-05T00:00:00Z"}},

		// Paris springs forward on 2026-03-29 at 02:00 CET (01:00 UTC) to
		// 03:00 CEST: 02:30 does not exist that day and fires at the change.
		{"SpringForwardSkippedTime", domain.Schedule{Cron: "30 2 * * *", Timezone: "Europe/Paris"}, "2026-03-27T12:00:00Z",
			[]string{"2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"}},
		{"SpringForwardRange", domain.Schedule{Cron: "*/30 1-3 * * *", Timezone: "Europe/Paris"}, "2026-03-28T23:30:00Z",
			[]string{"2026-03-29T00:00:00Z", "2026-03-29T00:30:00Z", "2026-03-29T01:00:00Z", "2026-03-29T01:30:00Z", "2026-03-29T23:00:00Z"}},
		{"SpringForwardHourly", domain.Schedule{Cron: "0 * * * *", Timezone: "Europe/Paris"}, "2026-03-28T23:30:00Z",
			[]string{"2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z"}},
		// Paris falls back on 2026-10-25 at 03:00 CEST (01:00 UTC) to 02:00
		// CET: 02:30 happens twice and fires once, at its first occurrence.
		{"FallBackRepeatedTime", domain.Schedule{Cron: "30 2 * * *", Timezone: "Europe/Paris"}, "2026-10-23T12:00:00Z",
			[]string{"2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z", "2026-10-27T01:30:00Z"}},
		{"FallBackAfterFirstOccurrence", domain.Schedule{Cron: "30 2 * * *", Timezone: "Europe/Paris"}, "2026-10-25T00:45:00Z",
			[]string{"2026-10-26T01:30:00Z"}},
		{"FallBackHourly", domain.Schedule{Cron: "0 * * * *", Timezone: "Europe/Paris"}, "2026-10-24T23:30:00Z",
			[]string{"2026-10-25T00:00:00Z", "2026-10-25T01:00:00Z", "2026-10-25T02:00:00Z"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := tt.schedule.Validate(); err != nil {
				t.Fatal(err)
			}
			got := tt.schedule.Next(utc(tt.after), len(tt.want))
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i, w := range tt.want {
				if !got[i].Equal(utc(w)) {
					t.Errorf("[%d] = %s, want %s", i, got[i].UTC().Format(time.RFC3339Nano), w)
				}
			}
		})
	}
}

func TestScheduleNextInScheduleTimezone(t *testing.T) {
	t.Parallel()

	got := domain.Schedule{Cron: "30 2 * * *", Timezone: "Europe/Paris"}.Next(utc("2026-06-01T00:00:00Z"), 1)
	if len(got) != 1 || got[0].Format("15:04 MST") != "02:30 CEST" {
		t.Fatalf("got %v", got)
	}
}

func TestScheduleNextInvalid(t *testing.T) {
	t.Parallel()

	for _, s := range []domain.Schedule{
		{}, {IntervalSeconds: -1}, {Cron: "bad"}, {Cron: "* * * * *", Timezone: "Nowhere/City"},
	} {
		if got := s.Next(utc("2026-01-01T00:00:00Z"), 3); len(got) != 0 {
			t.Errorf("%+v: Next = %v, want none", s, got)
		}
	}
}

func TestScheduleValidate(t *testing.T) {
	t.Parallel()

	anchor := utc("2026-01-01T00:00:00Z")
	tests := []struct {
		name       string
		schedule   domain.Schedule
		field, msg string
	}{
		{"Empty", domain.Schedule{}, "schedule", "set interval_seconds or cron"},
		{"Both", domain.Schedule{IntervalSeconds: 60, Cron: "* * * * *"}, "schedule", "not both"},
		{"NegativeInterval", domain.Schedule{IntervalSeconds: -60}, "schedule.interval_seconds", "between 1 and 31622400 seconds, got -60"},
		{"IntervalUnderASecond", domain.Schedule{IntervalSeconds: 0.5}, "schedule.interval_seconds", "got 0.5"},
		{"IntervalOverAYear", domain.Schedule{IntervalSeconds: 400 * 86400}, "schedule.interval_seconds", "between 1 and"},
		{"CronFieldCount", domain.Schedule{Cron: "* * * *"}, "schedule.cron", "expected exactly 5 fields"},
		{"CronOutOfRange", domain.Schedule{Cron: "61 * * * *"}, "schedule.cron", "above maximum"},
		{"CronZeroStep", domain.Schedule{Cron: "*/0 * * * *"}, "schedule.cron", "step"},
		{"CronSeconds", domain.Schedule{Cron: "0 */5 * * * *"}, "schedule.cron", "expected exactly 5 fields"},
		{"CronEvery", domain.Schedule{Cron: "@every 5m"}, "schedule.cron", "use interval_seconds"},
		{"CronTimezonePrefix", domain.Schedule{Cron: "CRON_TZ=Europe/Paris 0 * * * *"}, "schedule.cron", "set the time zone in timezone"},
		{"CronNeverFires", domain.Schedule{Cron: "0 0 30 2 *"}, "schedule.cron", "never fires"},
		{"UnknownTimezone", domain.Schedule{Cron: "0 * * * *", Timezone: "Europe/Atlantis"}, "schedule.timezone", "unknown time zone"},
		{"LocalTimezone", domain.Schedule{IntervalSeconds: 60, Timezone: "Local"}, "schedule.timezone", "IANA"},
		{"AnchorWithCron", domain.Schedule{Cron: "0 * * * *", Anchor: &anchor}, "schedule.anchor", "only interval schedules"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			requireProblem(t, tt.schedule.Validate(), tt.field, tt.msg)
		})
	}
}

func TestScheduleDescribe(t *testing.T) {
	t.Parallel()

	anchor := utc("2026-01-01T00:00:10Z")
	tests := []struct {
		schedule domain.Schedule
		want     string
	}{
		{domain.Schedule{IntervalSeconds: 300}, "every 5 minutes"},
		{domain.Schedule{IntervalSeconds: 30}, "every 30 seconds"},
		{domain.Schedule{IntervalSeconds: 1}, "every second"},
		{domain.Schedule{IntervalSeconds: 2.5}, "every 2.5 seconds"},
		{domain.Schedule{IntervalSeconds: 90}, "every 90 seconds"},
		{domain.Schedule{IntervalSeconds: 3600}, "every hour"},
		{domain.Schedule{IntervalSeconds: 7200}, "every 2 hours"},
		{domain.Schedule{IntervalSeconds: 86400, Timezone: "Europe/Paris"}, "every day (Europe/Paris)"},
		{domain.Schedule{IntervalSeconds: 60, Anchor: &anchor}, "every minute from 2026-01-01T00:00:10Z"},
		{domain.Schedule{Cron: "*/5 * * * *", Timezone: "Europe/Paris"}, "cron */5 * * * * (Europe/Paris)"},
		{domain.Schedule{Cron: "@hourly"}, "cron @hourly (UTC)"},
	}
	for _, tt := range tests {
		if got := tt.schedule.Describe(); got != tt.want {
			t.Errorf("Describe(%+v) = %q, want %q", tt.schedule, got, tt.want)
		}
	}
}
