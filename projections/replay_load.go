package projections

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
	"golang.org/x/sync/errgroup"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
)

const chunkSize = 4096

// logReadBuffer is the read buffer of the connection that reads the log.
const logReadBuffer = 256 << 10

// chunk is a run of events, read in order, decoded by any decoder.
type chunk struct {
	envs  []domain.Envelope
	metas [][]byte // each event's metadata document, decoded into envs by the decoder
	err   error
	ready chan struct{}
}

// load reads the log, folds it and writes state_history as it goes; it
// returns the checkpoint of the last event it read and the folded rows.
func (r *replayer) load(ctx context.Context) (eventstore.Checkpoint, *batch, error) {
	g, ctx := errgroup.WithContext(ctx)
	var last eventstore.Checkpoint

	g.Go(func() error { // the total, for the estimate of time left: positions, from the index
		if n, err := r.store.PositionSpan(ctx, r.pool); err == nil {
			r.total.Store(n)
		}
		return nil
	})

	work := make(chan *chunk, 2*r.opts.Decoders)
	ordered := make(chan *chunk, 4*r.opts.Decoders)
	g.Go(func() error { // read
		defer close(work)
		defer close(ordered)
		return r.read(ctx, work, ordered)
	})
	for range r.opts.Decoders {
		g.Go(func() error { // decode
			d := newDecoder(r.store.Registry())
			for c := range work {
				c.err = d.decode(c.envs, c.metas)
				close(c.ready)
			}
			return nil
		})
	}

	history := make(chan []historyRow, 8)
	// Slices of rows written go back to the folder: a new one for each
	// chunk was megabytes to allocate and clear, a chunk at a time.
	written := make(chan []historyRow, 10)
	b := newBatch()
	b.ahead = readAhead(ctx, r.store, r.pool)
	g.Go(func() error { // fold
		defer close(history)
		for {
			c, ok := <-ordered
			if !ok {
				break
			}
			select {
			case <-c.ready:
			case <-ctx.Done():
				return ctx.Err()
			}

			if c.err != nil {
				return c.err
			}
			if err := b.fold(c.envs); err != nil {
				return fmt.Errorf("replay: %w", err)
			}
			r.validate(c.envs)
			if len(b.history) > 0 {
				select {
				case history <- b.history:
				case <-ctx.Done():
					return ctx.Err()
				}
				select {
				case b.history = <-written:
				default:
					b.history = make([]historyRow, 0, len(b.history))
				}
			}
			last = eventstore.CheckpointOf(c.envs[len(c.envs)-1])
			r.events.Add(int64(len(c.envs)))
		}
		return nil
	})
	g.Go(func() error { // write state_history as it comes
		var rows []historyRow
		next := 0
		src := func(c *copyBuf) (int, error) {
			for next == len(rows) {
				if rows != nil {
					select {
					case written <- rows[:0]:
					default:
					}
				}
				var ok bool
				select {
				case rows, ok = <-history:
					if !ok {
						return 0, nil
					}
					next = 0
				case <-ctx.Done():
					return 0, ctx.Err()
				}
			}
			n := min(len(rows)-next, 1000)
			for i := next; i < next+n; i++ {
				_ = rows[i].encode(c)
			}
			next += n
			return n, nil
		}
		return r.copy(ctx, historyTable, src)
	})
	if err := g.Wait(); err != nil {
		return last, nil, err
	}
	r.opts.Logger.Debug("replay: log read and folded", "events", r.events.Load(), "elapsed", time.Since(r.start))
	return last, b, nil
}

// read streams the log into chunks, handing each to a decoder and, in
// order, to the folder.
func (r *replayer) read(ctx context.Context, work, ordered chan<- *chunk) error {
	// A connection of its own, whose reads fill a large buffer: the log
	// comes in hundreds of megabytes, and the default 8 KB reads made a
	// system call (and often a goroutine switch) per few dozen events.
	cfg := r.pool.Config().ConnConfig.Copy()
	cfg.BuildFrontend = func(rd io.Reader, w io.Writer) *pgproto3.Frontend {
		return pgproto3.NewFrontend(bufio.NewReaderSize(rd, logReadBuffer), w)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := r.store.LogRows(ctx, conn)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	defer rows.Close()
	// Fixed-width columns must come in binary; text and jsonb may come
	// either way (jsonb in binary is a version byte and then its text).
	fds := rows.FieldDescriptions()
	binaryRows := len(fds) == 9
	for _, i := range []int{0, 1, 2, 4, 8} {
		if binaryRows && fds[i].Format != pgx.BinaryFormatCode {
			binaryRows = false
		}
	}
	jsonSkip := func(i int) int {
		if binaryRows && fds[i].Format == pgx.BinaryFormatCode {
			return 1
		}
		return 0
	}
	dataSkip, metaSkip := jsonSkip(6), jsonSkip(7)
	names := map[string]string{} // stream and event type names, shared
	intern := func(b []byte) string {
		if s, ok := names[string(b)]; ok {
			return s
		}
		s := string(b)
		names[s] = s
		return s
	}
	send := func(c *chunk) error {
		select {
		case work <- c:
		case <-ctx.Done():
			return ctx.Err()
		}
		select {
		case ordered <- c:
		case <-ctx.Done():
			return ctx.Err()
		}
		return nil
	}
	newChunk := func() *chunk {
		return &chunk{envs: make([]domain.Envelope, 0, chunkSize), metas: make([][]byte, 0, chunkSize), ready: make(chan struct{})}
	}
	c := newChunk()
	var arena []byte
	for rows.Next() {
		// Filled in place: an Envelope is large, and a local one escaped
		// to the heap, once per event.
		c.envs = append(c.envs, domain.Envelope{})
		e := &c.envs[len(c.envs)-1]
		if binaryRows {
			v := rows.RawValues()
			if len(v[0]) != 8 || len(v[1]) != 8 || len(v[2]) != 16 || len(v[4]) != 8 || len(v[6]) < dataSkip || len(v[7]) < metaSkip || len(v[8]) != 8 {
				return errors.New("replay: unexpected binary row layout")
			}
			e.Position = int64(binary.BigEndian.Uint64(v[0]))
			e.TransactionID = binary.BigEndian.Uint64(v[1])
			copy(e.StreamID[:], v[2])
			e.StreamType = intern(v[3])
			e.Version = int64(binary.BigEndian.Uint64(v[4]))
			e.Type = intern(v[5])
			data, meta := v[6][dataSkip:], v[7][metaSkip:]
			if cap(arena)-len(arena) < len(data)+len(meta) {
				arena = make([]byte, 0, max(1<<20, len(data)+len(meta)))
			}
			n := len(arena)
			arena = append(arena, data...)
			arena = append(arena, meta...)
			e.Data = arena[n : n+len(data) : n+len(data)]
			c.metas = append(c.metas, arena[n+len(data):len(arena):len(arena)])
			e.RecordedAt = time.UnixMicro(int64(binary.BigEndian.Uint64(v[8])) + pgEpochMicros)
		} else {
			var txid int64
			var meta []byte
			if err := rows.Scan(&e.Position, &txid, &e.StreamID, &e.StreamType, &e.Version, &e.Type, (*[]byte)(&e.Data), &meta, &e.RecordedAt); err != nil {
				return fmt.Errorf("replay: scan event: %w", err)
			}
			e.TransactionID = uint64(txid)
			c.metas = append(c.metas, meta)
		}
		if len(c.envs) == chunkSize {
			if err := send(c); err != nil {
				return err
			}
			c = newChunk()
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("replay: read log: %w", err)
	}
	if len(c.envs) > 0 {
		return send(c)
	}
	return nil
}
