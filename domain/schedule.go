package domain

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	_ "time/tzdata" // time zones work on machines without zoneinfo files

	"github.com/robfig/cron/v3"
)

// MaxIntervalSeconds is the longest interval schedule (366 days); longer
// periods are for cron.
const MaxIntervalSeconds = 366 * 86400

// Schedule says when a deployment runs: every IntervalSeconds, or by a cron
// expression, in a time zone.
//
// Cron expressions have 5 fields (minute hour day-of-month month
// day-of-week) or are one of @yearly, @monthly, @weekly, @daily, @hourly.
// They are read in Timezone, with the rules of Vixie cron for daylight saving
// time when the hour field is not "*": a time skipped when clocks go forward
// (02:30 on a 02:00 -> 03:00 day) fires once at the change (03:00), and a time
// that happens twice when clocks go back fires at its first occurrence only.
// Expressions whose hour field is "*" fire at every matching instant.
type Schedule struct {
	IntervalSeconds float64    `json:"interval_seconds,omitempty"` // at least 1, fractions allowed
	Anchor          *time.Time `json:"anchor,omitempty"`           // interval runs fall on anchor + k*interval; defaults to 1970-01-01 00:00 in Timezone
	Cron            string     `json:"cron,omitempty"`
	Timezone        string     `json:"timezone,omitempty"` // IANA name such as Europe/Paris; defaults to UTC
}

// Validate checks the schedule; error details name fields such as
// "schedule.cron".
func (s Schedule) Validate() error {
	p := &Problems{Message: "invalid schedule"}
	s.validate(p, "schedule")
	return p.Err()
}

func (s Schedule) validate(p *Problems, prefix string) {
	loc, err := s.location()
	if err != nil {
		p.Add(prefix+".timezone", "%v", err)
	}
	switch {
	case s.IntervalSeconds != 0 && s.Cron != "":
		p.Add(prefix, "set interval_seconds or cron, not both")
	case s.IntervalSeconds == 0 && s.Cron == "":
		p.Add(prefix, "set interval_seconds or cron")
	case s.Cron != "":
		if loc == nil {
			loc = time.UTC
		}
		spec, err := cronSpec(s.Cron, loc)
		if err != nil {
			p.Add(prefix+".cron", "%v", err)
		} else if spec.Next(time.Date(2026, 1, 1, 0, 0, 0, 0, loc)).IsZero() {
			p.Add(prefix+".cron", "%q never fires", s.Cron)
		}
		if s.Anchor != nil {
			p.Add(prefix+".anchor", "only interval schedules have an anchor")
		}
	case !(s.IntervalSeconds >= 1 && s.IntervalSeconds <= MaxIntervalSeconds):
		p.Add(prefix+".interval_seconds", "must be between 1 and %d seconds, got %v", MaxIntervalSeconds, s.IntervalSeconds)
	}
	if s.Anchor != nil && (s.Anchor.Year() < 1900 || s.Anchor.Year() > 2200) {
		p.Add(prefix+".anchor", "must be between the years 1900 and 2200")
	}
}

var locations sync.Map // name -> *time.Location, as time.LoadLocation reads a file each time

func (s Schedule) location() (*time.Location, error) {
	switch s.Timezone {
	case "", "UTC":
		return time.UTC, nil
	case "Local":
		return nil, errors.New(`use an IANA time zone name such as "Europe/Paris", not "Local"`)
	}
	if loc, ok := locations.Load(s.Timezone); ok {
		return loc.(*time.Location), nil
	}
	loc, err := time.LoadLocation(s.Timezone)
	if err != nil {
		return nil, fmt.Errorf("unknown time zone %q: use an IANA name such as \"Europe/Paris\"", s.Timezone)
	}
	locations.Store(s.Timezone, loc)
	return loc, nil
}

func cronSpec(expr string, loc *time.Location) (*cron.SpecSchedule, error) {
	expr = strings.TrimSpace(expr)
	if strings.HasPrefix(expr, "TZ=") || strings.HasPrefix(expr, "CRON_TZ=") {
		return nil, errors.New("set the time zone in timezone, not in the expression")
	}
	sched, err := cron.ParseStandard(expr)
	if err != nil {
		return nil, fmt.Errorf("invalid cron expression %q: %v", expr, err)
	}
	spec, ok := sched.(*cron.SpecSchedule)
	if !ok {
		return nil, errors.New("@every is not supported: use interval_seconds")
	}
	spec.Location = loc
	return spec, nil
}

// Next returns the next n fire times strictly after the given time, in the
// schedule's time zone. It returns fewer (or none) when the schedule is
// invalid or stops firing.
func (s Schedule) Next(after time.Time, n int) []time.Time {
	loc, err := s.location()
	if err != nil || n <= 0 {
		return nil
	}
	out := make([]time.Time, 0, min(n, 1000))
	if s.Cron != "" {
		spec, err := cronSpec(s.Cron, loc)
		if err != nil {
			return nil
		}
		for t := after; len(out) < n; {
			if t = nextCron(spec, t); t.IsZero() {
				break
			}
			out = append(out, t)
		}
		return out
	}
	if !(s.IntervalSeconds >= 1 && s.IntervalSeconds <= MaxIntervalSeconds) {
		return nil
	}
	every := time.Duration(s.IntervalSeconds * float64(time.Second))
	anchor := time.Date(1970, 1, 1, 0, 0, 0, 0, loc)
	if s.Anchor != nil {
		anchor = *s.Anchor
	}
	d := after.Sub(anchor)
	k := d / every // the first k with anchor + k*every > after
	if d >= 0 || d%every == 0 {
		k++
	}
	if first := anchor.Add(k * every); !first.After(after) {
		return nil // after is too far from the anchor for time.Duration
	}
	for i := range time.Duration(n) {
		out = append(out, anchor.Add((k+i)*every).In(loc))
	}
	return out
}

const allHours = 1<<24 - 1

// nextCron is the first fire time of spec strictly after the given time.
//
// An expression whose hour field is "*" fires at every instant whose wall
// clock matches, which robfig/cron computes. Otherwise nextCron walks the
// matching wall clock times (robfig/cron in UTC, where there is no daylight
// saving time) and maps each to the instants showing it: a time shown twice
// fires at the first, a time never shown (clocks going forward) fires at the
// change. So each matching wall clock time fires exactly once.
func nextCron(spec *cron.SpecSchedule, after time.Time) time.Time {
	loc := spec.Location
	if spec.Hour&allHours == allHours {
		return spec.Next(after).In(loc)
	}
	wallSpec := *spec
	wallSpec.Location = time.UTC
	wall := wallClock(after.In(loc))
	for {
		if wall = wallSpec.Next(wall); wall.IsZero() {
			return time.Time{}
		}
		shown, change := instants(wall, loc)
		switch {
		case len(shown) > 0 && shown[0].After(after):
			return shown[0]
		case len(shown) == 0 && change.After(after):
			return change
		}
	}
}

// wallClock returns t's wall clock as a UTC time.
func wallClock(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
}

// instants returns the instants at which clocks in loc show wall (a wall
// clock written as a UTC time), in order: usually one, two when clocks go
// back over it, none when they go forward over it; then change is the
// instant they go forward. It assumes at most one change of offset within a
// day of wall.
func instants(wall time.Time, loc *time.Location) (shown []time.Time, change time.Time) {
	_, before := wall.Add(-24 * time.Hour).In(loc).Zone()
	_, after := wall.Add(24 * time.Hour).In(loc).Zone()
	for _, off := range []int{before, after} {
		t := wall.Add(-time.Duration(off) * time.Second).In(loc)
		if wallClock(t).Equal(wall) && (len(shown) == 0 || !shown[0].Equal(t)) {
			shown = append(shown, t)
		}
	}
	if len(shown) > 0 || after <= before {
		return shown, time.Time{}
	}
	// Clocks go forward between lo (offset before) and hi (offset after);
	// offsets change on whole seconds.
	lo, hi := wall.Unix()-int64(after), wall.Unix()-int64(before)
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		if _, off := time.Unix(mid, 0).In(loc).Zone(); off == before {
			lo = mid
		} else {
			hi = mid
		}
	}
	return nil, time.Unix(hi, 0).In(loc)
}

// Describe says when the schedule fires, in words: "every 5 minutes",
// "cron 30 2 * * * (Europe/Paris)".
func (s Schedule) Describe() string {
	if s.Cron != "" {
		tz := s.Timezone
		if tz == "" {
			tz = "UTC"
		}
		return fmt.Sprintf("cron %s (%s)", strings.TrimSpace(s.Cron), tz)
	}
	if s.IntervalSeconds <= 0 {
		return "never"
	}
	desc := "every " + describeSeconds(s.IntervalSeconds)
	switch {
	case s.Anchor != nil:
		desc += " from " + s.Anchor.Format(time.RFC3339)
	case s.Timezone != "" && s.Timezone != "UTC" && s.IntervalSeconds >= 3600:
		desc += " (" + s.Timezone + ")"
	}
	return desc
}

func describeSeconds(sec float64) string {
	for _, u := range []struct {
		name string
		size float64
	}{{"day", 86400}, {"hour", 3600}, {"minute", 60}} {
		if n := sec / u.size; n >= 1 && n == float64(int64(n)) {
			if n == 1 {
				return u.name
			}
			return strconv.FormatInt(int64(n), 10) + " " + u.name + "s"
		}
	}
	if sec == 1 {
		return "second"
	}
	return strconv.FormatFloat(sec, 'f', -1, 64) + " seconds"
}
