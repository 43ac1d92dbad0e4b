package eventstore

import (
	"context"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ConfigurePool prepares a pool's connections for Ordo's queries: ids
// (uuid.UUID) are sent in PostgreSQL's binary format. Without it pgx sends
// each one through its database/sql Value method, as text that PostgreSQL
// parses again, which costs more than anything else in binding a task's
// statements. Each new connection also notes the database history it
// reached (see HistoryEpoch). It keeps an AfterConnect the config already
// has.
func ConfigurePool(cfg *pgxpool.Config) {
	after := cfg.AfterConnect
	cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		RegisterTypes(conn.TypeMap())
		noteHistory(ctx, conn)
		if after != nil {
			return after(ctx, conn)
		}
		return nil
	}
}

// NewPool opens a pool on url configured by ConfigurePool.
func NewPool(ctx context.Context, url string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	ConfigurePool(cfg)
	return pgxpool.NewWithConfig(ctx, cfg)
}

// RegisterTypes makes m encode uuid.UUID values, and slices of them, as
// binary uuids.
func RegisterTypes(m *pgtype.Map) {
	m.TryWrapEncodePlanFuncs = append([]pgtype.TryWrapEncodePlanFunc{wrapUUID}, m.TryWrapEncodePlanFuncs...)
}

// wrapUUID hands a uuid.UUID on as the [16]byte it is, which pgx encodes
// as a binary uuid; pgx would otherwise prefer its driver.Valuer.
func wrapUUID(value any) (pgtype.WrappedEncodePlanNextSetter, any, bool) {
	if id, ok := value.(uuid.UUID); ok {
		return &uuidEncodePlan{}, [16]byte(id), true
	}
	return nil, nil, false
}

type uuidEncodePlan struct{ next pgtype.EncodePlan }

func (p *uuidEncodePlan) SetNext(next pgtype.EncodePlan) { p.next = next }

func (p *uuidEncodePlan) Encode(value any, buf []byte) ([]byte, error) {
	return p.next.Encode([16]byte(value.(uuid.UUID)), buf)
}
