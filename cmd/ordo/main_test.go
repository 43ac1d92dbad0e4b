package main

import (
	"os"
	"runtime/debug"
	"testing"

	"github.com/ordoflow/ordo/internal/seaweed"
)

// TestMain stops what the package's tests share once they are all done:
// the S3 server and the browser.
func TestMain(m *testing.M) {
	code := m.Run()
	seaweed.StopShared()
	stopSharedBrowser()
	os.Exit(code)
}

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
