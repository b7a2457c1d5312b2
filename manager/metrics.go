package manager

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics (GET /metrics, a read-only or admin token, like every read):
// the manager's own view, computed at scrape time from the in-memory view
// (no store round trip), plus the API's request counts and latencies.
// Names follow the Prometheus conventions (vnicfilter_manager_ prefix,
// _total counters, base units); per-host series are bounded by the
// enrolled hosts.
type metrics struct {
	s        *Server
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec

	revision, hosts, streams, objects, connected, desiredV, realizedV, inSync *prometheus.Desc
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		s:   s,
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vnicfilter_manager_http_requests_total",
			Help: "API requests answered, by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vnicfilter_manager_http_request_duration_seconds",
			Help:    "Time to answer an API request (desired-state streams excluded), by route pattern.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route"}),
		revision:  prometheus.NewDesc("vnicfilter_manager_store_revision", "Store revision the manager's view has applied.", nil, nil),
		hosts:     prometheus.NewDesc("vnicfilter_manager_hosts", "Enrolled hosts.", nil, nil),
		streams:   prometheus.NewDesc("vnicfilter_manager_agent_streams", "Open desired-state streams from agents.", nil, nil),
		objects:   prometheus.NewDesc("vnicfilter_manager_objects", "Stored objects by kind.", []string{"kind"}, nil),
		connected: prometheus.NewDesc("vnicfilter_manager_host_connected", "1 while the host's agent holds a desired-state stream.", []string{"host"}, nil),
		desiredV:  prometheus.NewDesc("vnicfilter_manager_host_desired_version", "Version of the host's desired state.", []string{"host"}, nil),
		realizedV: prometheus.NewDesc("vnicfilter_manager_host_realized_version", "Desired-state version the host's agent last reported as realized.", []string{"host"}, nil),
		inSync:    prometheus.NewDesc("vnicfilter_manager_host_in_sync", "1 when the host reports the version the manager wants.", []string{"host"}, nil),
	}
	m.reg.MustRegister(m, m.requests, m.latency, prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.revision, m.hosts, m.streams, m.objects, m.connected, m.desiredV, m.realizedV, m.inSync} {
		ch <- d
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	snap := m.s.view.snapshot()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(m.revision, float64(snap.rev))
	gauge(m.hosts, float64(len(snap.cfg.Hosts)))
	m.s.mu.Lock()
	open := 0
	for _, n := range m.s.streams {
		open += n
	}
	m.s.mu.Unlock()
	gauge(m.streams, float64(open))
	vms, vnics := 0, 0
	for _, inv := range snap.cfg.Inventory {
		vms += len(inv.VMs)
		for _, vm := range inv.VMs {
			vnics += len(vm.VNICs)
		}
	}
	for kind, n := range map[string]int{
		"groups": len(snap.cfg.Groups), "policies": len(snap.cfg.Policies), "assignments": len(snap.cfg.Assignments),
		"segments": len(snap.cfg.Segments), "encryptions": len(snap.cfg.Encryptions),
		"tagged_vms": len(snap.cfg.Tags), "vms": vms, "vnics": vnics,
	} {
		gauge(m.objects, float64(n), kind)
	}
	for host := range snap.cfg.Hosts {
		d := snap.desired[host].Version
		r := m.s.realized(host).Version
		gauge(m.connected, b2f(m.s.connected(host)), host)
		gauge(m.desiredV, float64(d), host)
		gauge(m.realizedV, float64(r), host)
		gauge(m.inSync, b2f(d == r), host)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// instrument counts h's requests by the pattern the mux matched.
func (m *metrics) instrument(h http.Handler) http.Handler {
	if m == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(rec, r)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		m.requests.WithLabelValues(route, r.Method, strconv.Itoa(rec.code)).Inc()
		if !rec.streamed {
			m.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
		}
	})
}

// serveMetrics is GET /metrics.
func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) error {
	promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}).ServeHTTP(w, r)
	return nil
}

// statusRecorder keeps the status code; a flushed response is a stream
// (the desired-state watch), whose duration is not a latency.
type statusRecorder struct {
	http.ResponseWriter
	code     int
	streamed bool
}

func (s *statusRecorder) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Flush() {
	s.streamed = true
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
