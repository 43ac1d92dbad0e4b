package groupcommit_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ordoflow/ordo/internal/groupcommit"
)

func TestItemsShareTransactionsUnderLoad(t *testing.T) {
	t.Parallel()
	var txs, items atomic.Int64
	c := groupcommit.New(groupcommit.Options[int]{Run: func(_ context.Context, batch []int) error {
		txs.Add(1)
		items.Add(int64(len(batch)))
		time.Sleep(2 * time.Millisecond) // a commit takes time
		return nil
	}})
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			if err := c.Do(context.Background(), i); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if items.Load() != 200 {
		t.Fatalf("%d items committed, want 200", items.Load())
	}
	if txs.Load() >= 100 {
		t.Fatalf("%d transactions for 200 concurrent items: no grouping", txs.Load())
	}
}

func TestOneBadItemFailsAlone(t *testing.T) {
	t.Parallel()
	bad := errors.New("bad item")
	block := make(chan struct{})
	var first atomic.Bool
	c := groupcommit.New(groupcommit.Options[int]{Run: func(_ context.Context, batch []int) error {
		if first.CompareAndSwap(false, true) {
			<-block // hold the first transaction so the rest queue into one batch
		}
		for _, v := range batch {
			if v == 13 {
				return bad
			}
		}
		return nil
	}})
	errs := make(chan error, 1)
	go func() { errs <- c.Do(context.Background(), 0) }()
	time.Sleep(20 * time.Millisecond)
	results := make([]error, 20)
	var wg sync.WaitGroup
	for i := 1; i <= 20; i++ {
		wg.Go(func() { results[i-1] = c.Do(context.Background(), i) })
	}
	time.Sleep(20 * time.Millisecond)
	close(block)
	wg.Wait()
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	for i, err := range results {
		if want := i+1 == 13; (err != nil) != want {
			t.Errorf("item %d: err %v", i+1, err)
		}
	}
}

// Submit returns at once; its callback gets the item's outcome, that of a
// bad item alone included, and Do and Submit share transactions.
func TestSubmitCallsBackWithTheOutcome(t *testing.T) {
	t.Parallel()
	bad := errors.New("bad item")
	release := make(chan struct{})
	c := groupcommit.New(groupcommit.Options[int]{Run: func(_ context.Context, batch []int) error {
		<-release
		for _, i := range batch {
			if i < 0 {
				return bad
			}
		}
		return nil
	}})
	type outcome struct {
		item int
		err  error
	}
	got := make(chan outcome, 10)
	for _, i := range []int{1, -1, 2} {
		c.Submit(context.Background(), i, func(err error) { got <- outcome{i, err} })
	}
	select {
	case g := <-got:
		t.Fatalf("item %d was called back before its transaction ran", g.item)
	default:
	}
	done := make(chan error, 1)
	go func() { done <- c.Do(context.Background(), 3) }()
	close(release)
	want := map[int]error{1: nil, -1: bad, 2: nil}
	for range want {
		g := <-got
		if !errors.Is(g.err, want[g.item]) {
			t.Errorf("item %d: outcome %v, want %v", g.item, g.err, want[g.item])
		}
	}
	if err := <-done; err != nil {
		t.Errorf("Do next to Submit: %v", err)
	}
	c.Wait()
}
