package projections_test

import (
	"context"
	"testing"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/internal/pgtest"
	"github.com/ordoflow/ordo/projections"
	"github.com/ordoflow/ordo/projections/projtest"
)

// BenchmarkEventListPage reads pages of 200 events of the global log (GET
// /events): "raw" as the event store returns them, "described" as the API
// serves them, each event of a run or task run with its run, its task and
// its states folded from the log. The difference is what describing costs.
//
//	make test PKGS=./projections TESTFLAGS='-run - -bench EventListPage -benchtime 200x'
func BenchmarkEventListPage(b *testing.B) {
	pool := pgtest.Pool(b)
	store := eventstore.New(pool, domain.NewRegistry())
	b.Cleanup(store.Close)
	log := projtest.NewLog(b, store)
	for range 100 {
		log.CreateRun(projtest.RunSpec{}).Complete()
	}
	ctx := context.Background()
	reader := projections.NewReader(store)
	var total int
	for cp := (eventstore.Checkpoint{}); ; {
		envs, err := store.ReadAllFiltered(ctx, pool, cp, eventstore.ReadFilter{}, 200)
		if err != nil {
			b.Fatal(err)
		}
		if len(envs) == 0 {
			break
		}
		total += len(envs)
		cp = eventstore.CheckpointOf(envs[len(envs)-1])
	}
	pages := total / 200
	b.Run("raw", func(b *testing.B) {
		var cp eventstore.Checkpoint
		for i := 0; b.Loop(); i++ {
			if i%pages == 0 {
				cp = eventstore.Checkpoint{}
			}
			envs, err := store.ReadAllFiltered(ctx, pool, cp, eventstore.ReadFilter{}, 200)
			if err != nil || len(envs) != 200 {
				b.Fatalf("%d events, %v", len(envs), err)
			}
			cp = eventstore.CheckpointOf(envs[len(envs)-1])
		}
	})
	b.Run("described", func(b *testing.B) {
		after := ""
		for i := 0; b.Loop(); i++ {
			if i%pages == 0 {
				after = ""
			}
			page, err := reader.EventList(ctx, projections.EventFilter{After: after, Limit: 200})
			if err != nil || len(page.Items) != 200 || page.Items[199].ToState == nil {
				b.Fatalf("%d events, %v", len(page.Items), err)
			}
			after = page.Items[199].Cursor
		}
	})
}
