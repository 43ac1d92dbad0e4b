package projections

import (
	"syscall"
	"testing"
	"time"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/internal/bench/loggen"
	"github.com/ordoflow/ordo/internal/pgtest"
)

// BenchmarkReplayGoSide measures ordo's side of a replay with PostgreSQL
// out of the loop: the replay scenario's synthetic log (200,000 events) is
// read once as Replay reads it, then decoded (a fresh decoder, as at the
// start of a replay) and folded again and again. Its CPU time per event is
// steady on a machine whose other load makes a whole replay's rate wander:
//
//	make test PKGS=./projections TESTFLAGS='-run - -bench ReplayGoSide -benchmem'
func BenchmarkReplayGoSide(b *testing.B) {
	const events = 200_000
	ctx := b.Context()
	pool := pgtest.Pool(b)
	store := eventstore.New(pool, domain.NewRegistry())
	b.Cleanup(store.Close)
	if err := loggen.New().Load(ctx, pool, events, nil); err != nil {
		b.Fatal(err)
	}
	// Every chunk fits in the channels: read needs no reader to finish.
	work, ordered := make(chan *chunk, events/chunkSize+2), make(chan *chunk, events/chunkSize+2)
	r := &replayer{pool: pool, store: store}
	if err := r.read(ctx, work, ordered); err != nil {
		b.Fatal(err)
	}
	close(ordered)
	var chunks []*chunk
	n := 0
	for c := range ordered {
		chunks = append(chunks, c)
		n += len(c.envs)
	}
	// CPU time rather than wall time: what the other work of a shared
	// machine changes least.
	perEvent := func(b *testing.B, cpu0 time.Duration) {
		b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(b.N*n), "cpu-ns/event")
	}
	decode := func() {
		d := newDecoder(store.Registry())
		for _, c := range chunks {
			if err := d.decode(c.envs, c.metas); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("decode", func(b *testing.B) {
		cpu0 := processCPU()
		for b.Loop() {
			decode()
		}
		perEvent(b, cpu0)
	})
	b.Run("fold", func(b *testing.B) {
		decode()
		cpu0 := processCPU()
		for b.Loop() {
			batch := newBatch()
			for _, c := range chunks {
				if err := batch.fold(c.envs); err != nil {
					b.Fatal(err)
				}
				batch.history = batch.history[:0] // a replay hands them to COPY
			}
		}
		perEvent(b, cpu0)
	})
}

// processCPU is the CPU time this process has used.
func processCPU() time.Duration {
	var u syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &u)
	return time.Duration(u.Utime.Nano() + u.Stime.Nano())
}
