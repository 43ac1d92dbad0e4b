package main

import (
	"runtime/debug"
	"testing"
)

// TestGCTarget: ordo collects garbage at gcPercent unless GOGC is set.
func TestGCTarget(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	for _, c := range []struct {
		gogc string
		want int
	}{{"", gcPercent}, {"150", 150}} {
		t.Setenv("GOGC", c.gogc)
		debug.SetGCPercent(150) // what the runtime took from GOGC=150
		configureGC()
		if got := debug.SetGCPercent(100); got != c.want {
			t.Errorf("GOGC=%q: collector target %d, want %d", c.gogc, got, c.want)
		}
	}
}
