package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/internal/groupcommit"
)

// Querier runs SQL: a pool, a connection or a transaction alike.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Store is the event log.
type Store struct {
	pool     *pgxpool.Pool
	registry *domain.Registry
	notifier *notifier
	alone    *groupcommit.Committer[*aloneRequest]
}

// New returns a store on pool that decodes events with registry.
func New(pool *pgxpool.Pool, registry *domain.Registry) *Store {
	s := &Store{pool: pool, registry: registry, notifier: newNotifier(pool)}
	s.alone = groupcommit.New(groupcommit.Options[*aloneRequest]{Run: s.appendAloneBatch, MaxInFlight: 2})
	return s
}

// Pool returns the store's connection pool.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Registry returns the registry the store decodes events with.
func (s *Store) Registry() *domain.Registry { return s.registry }

// Append is a group of events for one stream. ExpectedVersion is the
// stream's version the caller decided on: 0 for a stream that must not
// exist yet. Several Appends of one call may continue the same stream (each
// expecting the version the one before it ends at), to give their events
// different metadata.
type Append struct {
	StreamID        uuid.UUID
	ExpectedVersion int64
	Events          []domain.Event
	Metadata        domain.Metadata
}

// ConflictError says that a stream was not at the version the writer
// expected: another writer got there first, or the stream has fewer events.
// Its transaction is aborted; the command should be decided again.
type ConflictError struct {
	StreamIDs []uuid.UUID
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("stream version conflict on %v", e.StreamIDs)
}

// Is makes a conflict match ErrConflict.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// As makes a conflict read as a domain error with CodeConflict, so that
// domain.ErrorCode reports it as a conflict (an API answers 409) when it
// escapes the commands that retry it.
func (e *ConflictError) As(target any) bool {
	de, ok := target.(**domain.Error)
	if ok {
		*de = domain.Errorf(domain.CodeConflict, "%s; try again", e.Error())
	}
	return ok
}

// ErrConflict matches any *ConflictError with errors.Is.
var ErrConflict = errors.New("stream version conflict")

// appendSQL inserts a batch of events. A stream is at its expected version
// when the event at that version exists (0: the stream is new; the unique
// key on (stream_id, version) refuses a second writer). When any stream of
// the batch is behind, nothing is inserted.
//
// The event at the expected version must also come before this
// transaction in the log's order, (transaction_id, position). A
// transaction's id is given at its first write (a row lock, a job), so a
// transaction that wrote before a newer one appended that event would
// otherwise put the next version before it in the log, where every reader
// would find a gap. Such a writer is behind, like one that lost the race:
// the command is decided again in a new transaction.
const appendSQL = appendInput + appendInsert + `
RETURNING position, transaction_id::text::bigint, stream_id, version, recorded_at`

// saveSQL is appendSQL for a writer that needs no positions back: one row,
// the number of events inserted.
const saveSQL = appendInput + `, inserted AS (` + appendInsert + `
    RETURNING 1
)
SELECT count(*) FROM inserted`

// appendInput is the events to insert (u), and whether a stream is behind
// its expected version (behind).
const appendInput = `
WITH u AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::jsonb[], $6::jsonb[], $7::bigint[])
        AS u(stream_id, stream_type, version, type, data, metadata, expected)
), behind AS (
    SELECT 1 FROM u
    WHERE u.expected > 0
      AND NOT EXISTS (SELECT 1 FROM events e WHERE e.stream_id = u.stream_id AND e.version = u.expected
                                               AND e.transaction_id <= pg_current_xact_id())
      AND NOT EXISTS (SELECT 1 FROM u AS earlier WHERE earlier.stream_id = u.stream_id AND earlier.version = u.expected)
    LIMIT 1
)`

// appendInsert inserts the events of u unless a stream is behind.
const appendInsert = `
INSERT INTO events (stream_id, stream_type, version, type, data, metadata)
SELECT u.stream_id, u.stream_type, u.version, u.type, u.data, u.metadata
FROM u
WHERE NOT EXISTS (SELECT 1 FROM behind)`

// appendOneSQL is appendSQL for a single event.
const appendOneSQL = `
INSERT INTO events (stream_id, stream_type, version, type, data, metadata)
SELECT $1::uuid, $2::text, $3::bigint, $4::text, $5::jsonb, $6::jsonb
WHERE $7::bigint = 0
   OR EXISTS (SELECT 1 FROM events e WHERE e.stream_id = $1::uuid AND e.version = $7::bigint
                                       AND e.transaction_id <= pg_current_xact_id())
RETURNING position, transaction_id::text::bigint, stream_id, version, recorded_at`

// Append adds events to their streams within tx, in one statement, and
// returns them as stored. Each stream must be at its ExpectedVersion, else
// the result is a *ConflictError (and tx is aborted).
func (s *Store) Append(ctx context.Context, tx pgx.Tx, appends ...Append) ([]domain.Envelope, error) {
	return s.appendOn(ctx, tx, appends)
}

// Save is Append for a writer that has no use for the stored events'
// positions and times: nothing comes back but whether they were stored,
// which spares the reading and the building of an envelope per event.
func (s *Store) Save(ctx context.Context, tx pgx.Tx, appends ...Append) error {
	cols, n, err := appendColumns(appends, false)
	if err != nil || n == 0 {
		return err
	}
	var stored int
	if err := tx.QueryRow(ctx, saveSQL, cols.streamIDs, cols.streamTypes, cols.versions, cols.types, cols.datas, cols.metas, cols.expected).Scan(&stored); err != nil {
		return s.appendError(err, appends)
	}
	if stored != n {
		// a stream was behind its expected version; nothing was inserted
		return &ConflictError{StreamIDs: streamsOf(appends)}
	}
	return nil
}

// columns are the parameters of appendSQL: one element per event.
type columns struct {
	streamIDs   [][16]byte // raw bytes: pgx encodes them without a text round trip
	streamTypes []string
	versions    []int64
	types       []string
	datas       []json.RawMessage
	metas       []json.RawMessage
	expected    []int64
	envs        []domain.Envelope // with envelopes: the events as they will be stored
}

// appendColumns encodes the events of appends, and their envelopes when
// envelopes is set. Metadata shared by several appends (those of one
// command, or of one flow run's tree) is encoded once.
func appendColumns(appends []Append, envelopes bool) (columns, int, error) {
	n := 0
	for _, a := range appends {
		n += len(a.Events)
	}
	if n == 0 {
		return columns{}, 0, nil
	}
	c := columns{
		streamIDs:   make([][16]byte, 0, n),
		streamTypes: make([]string, 0, n),
		versions:    make([]int64, 0, n),
		types:       make([]string, 0, n),
		datas:       make([]json.RawMessage, 0, n),
		metas:       make([]json.RawMessage, 0, n),
		expected:    make([]int64, 0, n),
	}
	if envelopes {
		c.envs = make([]domain.Envelope, 0, n)
	}
	var (
		lastMeta    domain.Metadata
		lastEncoded json.RawMessage
	)
	for _, a := range appends {
		if a.ExpectedVersion < 0 {
			return c, 0, fmt.Errorf("append to %s: negative expected version %d", a.StreamID, a.ExpectedVersion)
		}
		meta := lastEncoded
		if meta == nil || a.Metadata != lastMeta {
			var err error
			if meta, err = json.Marshal(a.Metadata); err != nil {
				return c, 0, fmt.Errorf("encode metadata: %w", err)
			}
			lastMeta, lastEncoded = a.Metadata, meta
		}
		for i, e := range a.Events {
			data, err := json.Marshal(e)
			if err != nil {
				return c, 0, fmt.Errorf("encode %s: %w", e.EventType(), err)
			}
			v := a.ExpectedVersion + int64(i) + 1
			c.streamIDs = append(c.streamIDs, a.StreamID)
			c.streamTypes = append(c.streamTypes, e.StreamType())
			c.versions = append(c.versions, v)
			c.types = append(c.types, e.EventType())
			c.datas = append(c.datas, data)
			c.metas = append(c.metas, meta)
			c.expected = append(c.expected, a.ExpectedVersion)
			if envelopes {
				c.envs = append(c.envs, domain.Envelope{
					StreamID: a.StreamID, StreamType: e.StreamType(), Version: v, Type: e.EventType(),
					Data: data, Metadata: a.Metadata, Event: e,
				})
			}
		}
	}
	return c, n, nil
}

func (s *Store) appendOn(ctx context.Context, q Querier, appends []Append) ([]domain.Envelope, error) {
	c, n, err := appendColumns(appends, true)
	if err != nil || n == 0 {
		return nil, err
	}
	var rows pgx.Rows
	if n == 1 {
		// the common single event: scalar parameters are cheaper to send and plan
		rows, err = q.Query(ctx, appendOneSQL, c.streamIDs[0], c.streamTypes[0], c.versions[0], c.types[0], c.datas[0], c.metas[0], c.expected[0])
	} else {
		rows, err = q.Query(ctx, appendSQL, c.streamIDs, c.streamTypes, c.versions, c.types, c.datas, c.metas, c.expected)
	}
	envs := c.envs
	if err != nil {
		return nil, s.appendError(err, appends)
	}
	type key struct {
		id uuid.UUID
		v  int64
	}
	index := make(map[key]int, n)
	for i := range envs {
		index[key{envs[i].StreamID, envs[i].Version}] = i
	}
	stored := 0
	for rows.Next() {
		var (
			pos, txid int64
			id        uuid.UUID
			v         int64
			at        time.Time
		)
		if err := rows.Scan(&pos, &txid, &id, &v, &at); err != nil {
			rows.Close()
			return nil, fmt.Errorf("append events: %w", err)
		}
		e := &envs[index[key{id, v}]]
		e.Position, e.TransactionID, e.RecordedAt = pos, uint64(txid), at
		stored++
	}
	if err := rows.Err(); err != nil {
		return nil, s.appendError(err, appends)
	}
	if stored != n {
		// a stream was behind its expected version; nothing was inserted
		return nil, &ConflictError{StreamIDs: streamsOf(appends)}
	}
	return envs, nil
}

// AppendAlone appends events in a transaction of their own, for commands
// whose only effect is their events. Concurrent calls are group-committed:
// while one statement commits, the next calls queue and then go in one
// statement together (a call alone goes at once). Each call still succeeds
// or fails on its own: when a shared statement fails, its calls are tried
// one by one.
func (s *Store) AppendAlone(ctx context.Context, appends ...Append) ([]domain.Envelope, error) {
	req := &aloneRequest{appends: appends}
	if err := s.alone.Do(ctx, req); err != nil {
		return nil, err
	}
	if len(req.envs) > 0 {
		s.Committed()
	}
	return req.envs, nil
}

// aloneRequest is one AppendAlone call waiting for its statement.
type aloneRequest struct {
	appends []Append
	envs    []domain.Envelope
}

// appendAloneBatch writes the appends of several calls in one statement,
// which is its own transaction.
func (s *Store) appendAloneBatch(ctx context.Context, reqs []*aloneRequest) error {
	var all []Append
	for _, r := range reqs {
		all = append(all, r.appends...)
	}
	envs, err := s.appendOn(ctx, s.pool, all)
	if err != nil {
		return err
	}
	for _, r := range reqs {
		n := 0
		for _, a := range r.appends {
			n += len(a.Events)
		}
		r.envs, envs = envs[:n:n], envs[n:]
	}
	return nil
}

func (s *Store) appendError(err error, appends []Append) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "events_stream_version_key" {
		return &ConflictError{StreamIDs: streamsOf(appends)}
	}
	return fmt.Errorf("append events: %w", err)
}

// streamsOf lists the streams a batch of appends writes to.
func streamsOf(appends []Append) []uuid.UUID {
	ids := make([]uuid.UUID, 0, len(appends))
	seen := map[uuid.UUID]bool{}
	for _, a := range appends {
		if !seen[a.StreamID] {
			seen[a.StreamID] = true
			ids = append(ids, a.StreamID)
		}
	}
	return ids
}

const selectColumns = `position, transaction_id::text::bigint, stream_id, stream_type, version, type, data, metadata, recorded_at`

// ReadStream returns a stream's events after version, in order.
func (s *Store) ReadStream(ctx context.Context, q Querier, streamID uuid.UUID, afterVersion int64) ([]domain.Envelope, error) {
	rows, err := q.Query(ctx, `SELECT `+selectColumns+` FROM events WHERE stream_id = $1 AND version > $2 ORDER BY version`, streamID, afterVersion)
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", streamID, err)
	}
	return s.scan(rows)
}

// ReadStreams returns the events of several streams, each in order, all in
// log order (see InStreamOrder).
func (s *Store) ReadStreams(ctx context.Context, q Querier, streamIDs []uuid.UUID) ([]domain.Envelope, error) {
	rows, err := q.Query(ctx, `SELECT `+selectColumns+` FROM events WHERE stream_id = ANY($1) ORDER BY events.transaction_id, events.position`, streamIDs)
	if err != nil {
		return nil, fmt.Errorf("read streams: %w", err)
	}
	envs, err := s.scan(rows)
	InStreamOrder(envs)
	return envs, err
}

// ReadStreamsAfter returns the events of several streams, each after its
// given version, all in log order: one query for a batch of commands that
// keep their streams' earlier state cached.
func (s *Store) ReadStreamsAfter(ctx context.Context, q Querier, after map[uuid.UUID]int64) ([]domain.Envelope, error) {
	ids := make([][16]byte, 0, len(after))
	versions := make([]int64, 0, len(after))
	for id, v := range after {
		ids = append(ids, id)
		versions = append(versions, v)
	}
	rows, err := q.Query(ctx, `
SELECT e.position, e.transaction_id::text::bigint, e.stream_id, e.stream_type, e.version, e.type, e.data, e.metadata, e.recorded_at
FROM unnest($1::uuid[], $2::bigint[]) AS s(stream_id, after_version)
JOIN events e ON e.stream_id = s.stream_id AND e.version > s.after_version
ORDER BY e.transaction_id, e.position`, ids, versions)
	if err != nil {
		return nil, fmt.Errorf("read streams: %w", err)
	}
	envs, err := s.scan(rows)
	InStreamOrder(envs)
	return envs, err
}

// InStreamOrder puts each stream's events of envs, a slice of the log in
// log order, in version order, in the places the stream's events take. A
// log written before appends kept each stream's versions in log order (see
// appendSQL) can hold an event before the version it follows; its readers
// still fold every stream in version order. A slice in order is left as
// it is.
func InStreamOrder(envs []domain.Envelope) {
	last := make(map[uuid.UUID]int64, len(envs))
	var behind map[uuid.UUID]bool
	for i := range envs {
		id := envs[i].StreamID
		if v, ok := last[id]; ok && envs[i].Version < v {
			if behind == nil {
				behind = map[uuid.UUID]bool{}
			}
			behind[id] = true
		}
		last[id] = envs[i].Version
	}
	for id := range behind {
		var places []int
		var events []domain.Envelope
		for i := range envs {
			if envs[i].StreamID == id {
				places = append(places, i)
				events = append(events, envs[i])
			}
		}
		sort.SliceStable(events, func(a, b int) bool { return events[a].Version < events[b].Version })
		for k, i := range places {
			envs[i] = events[k]
		}
	}
}

func (s *Store) scan(rows pgx.Rows) ([]domain.Envelope, error) {
	envs, err := scanRaw(rows)
	if err != nil {
		return nil, err
	}
	for i := range envs {
		if err := s.registry.DecodeEnvelope(&envs[i]); err != nil {
			return nil, fmt.Errorf("event %d: %w", envs[i].Position, err)
		}
	}
	return envs, nil
}

// scanRaw reads events as stored, without decoding their payloads.
func scanRaw(rows pgx.Rows) ([]domain.Envelope, error) {
	defer rows.Close()
	var envs []domain.Envelope
	for rows.Next() {
		var (
			e    domain.Envelope
			txid int64
			meta []byte
		)
		// Data is scanned as bytes: into a json.RawMessage, pgx would have
		// encoding/json check every document PostgreSQL already checked
		// (a tenth of a millisecond per 10 KB).
		if err := rows.Scan(&e.Position, &txid, &e.StreamID, &e.StreamType, &e.Version, &e.Type, (*[]byte)(&e.Data), &meta, &e.RecordedAt); err != nil {
			return nil, fmt.Errorf("scan event: %w", err)
		}
		e.TransactionID = uint64(txid)
		if err := json.Unmarshal(meta, &e.Metadata); err != nil {
			return nil, fmt.Errorf("event %d: decode metadata: %w", e.Position, err)
		}
		envs = append(envs, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	return envs, nil
}
