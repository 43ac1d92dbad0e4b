package api

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/migrations"
)

// healthz says the process serves HTTP.
func (s *server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// readyz says whether this server should get traffic: the database answers,
// its schema is the one this binary expects, and the read models are not
// far behind the log.
func (s *server) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 3*time.Second)
	defer cancel()
	p := &domain.Problems{Message: "not ready"}
	checks := map[string]string{"database": "ok", "migrations": "ok", "projection": "ok"}
	if err := s.opts.Pool.Ping(ctx); err != nil {
		p.Add("database", "cannot be reached: %v", err)
		checks["database"] = "unreachable"
	} else {
		if v, err := migrations.Status(ctx, s.opts.Pool); err != nil {
			p.Add("migrations", "cannot read the schema version: %v", err)
		} else if !v.Current() {
			p.Add("migrations", "the schema is at ordo %d (dirty %t), river %d; this binary needs ordo %d, river %d: run ordo migrate", v.Ordo, v.Dirty, v.River, v.Latest, v.LatestRvr)
		}
		if lag, err := s.opts.Projection.Lag(ctx); err != nil {
			p.Add("projection", "cannot measure the lag: %v", err)
		} else {
			checks["projection"] = strconv.FormatInt(lag, 10) + " events behind"
			if lag > s.opts.ReadyMaxLag {
				p.Add("projection", "the read models are %d events behind the log (at most %d)", lag, s.opts.ReadyMaxLag)
			}
		}
	}
	if err := p.Err(); err != nil {
		return domain.Errorf(domain.CodeUnavailable, "%v", err)
	}
	return c.JSON(http.StatusOK, map[string]any{"status": "ready", "checks": checks})
}

// httpMetrics counts requests by route and status.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newHTTPMetrics(reg prometheus.Registerer) (*httpMetrics, error) {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ordo_http_requests_total", Help: "HTTP requests by method, route and status.",
		}, []string{"method", "route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ordo_http_request_seconds", Help: "HTTP request duration by method and route.",
			Buckets: prometheus.DefBuckets,
		}, []string{"method", "route"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *httpMetrics) handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

// measure records each request once its response is written.
func (s *server) measure(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err) // write the error now, so its status is counted
		}
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		s.metrics.requests.WithLabelValues(c.Request().Method, route, strconv.Itoa(c.Response().Status)).Inc()
		s.metrics.duration.WithLabelValues(c.Request().Method, route).Observe(time.Since(start).Seconds())
		return nil
	}
}
