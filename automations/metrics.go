package automations

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ordoflow/ordo/eventstore"
)

var (
	consumerLagDesc = prometheus.NewDesc("ordo_automation_consumer_lag_events",
		"Events in the log the automation consumer has not read yet.", nil, nil)
	deliveriesDesc = prometheus.NewDesc("ordo_automation_deliveries",
		"Automation deliveries by status (pending, delivered, dead).", []string{"status"}, nil)
)

// deliveryStatuses are every status a delivery can have, reported with
// zeros too.
var deliveryStatuses = []string{"pending", "delivered", "dead"}

// metricsCollector reads the automation gauges from the database when
// metrics are scraped.
type metricsCollector struct{ store *eventstore.Store }

func (metricsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- consumerLagDesc
	ch <- deliveriesDesc
}

func (c metricsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if lag, err := c.lag(ctx); err != nil {
		ch <- prometheus.NewInvalidMetric(consumerLagDesc, err)
	} else {
		ch <- prometheus.MustNewConstMetric(consumerLagDesc, prometheus.GaugeValue, float64(lag))
	}
	counts := map[string]int64{}
	var status string
	var n int64
	rows, err := c.store.Pool().Query(ctx, `SELECT status, count(*) FROM automation_deliveries GROUP BY status`)
	if err == nil {
		_, err = pgx.ForEachRow(rows, []any{&status, &n}, func() error { counts[status] = n; return nil })
	}
	if err != nil {
		ch <- prometheus.NewInvalidMetric(deliveriesDesc, fmt.Errorf("count deliveries: %w", err))
		return
	}
	for _, s := range deliveryStatuses {
		ch <- prometheus.MustNewConstMetric(deliveriesDesc, prometheus.GaugeValue, float64(counts[s]), s)
	}
}

// lag counts the events after the consumer's checkpoint; none before it
// first runs (it then starts at the log's end).
func (c metricsCollector) lag(ctx context.Context) (int64, error) {
	cp, err := readCheckpoint(ctx, c.store.Pool())
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return c.store.Lag(ctx, c.store.Pool(), cp)
}

// RegisterMetrics registers the automation gauges (the consumer's lag and
// the deliveries by status) with r; already registered ones are left.
func (s *Service) RegisterMetrics(r prometheus.Registerer) error {
	if err := r.Register(metricsCollector{s.store}); err != nil {
		var already prometheus.AlreadyRegisteredError
		if !errors.As(err, &already) {
			return fmt.Errorf("register automation metrics: %w", err)
		}
	}
	return nil
}
