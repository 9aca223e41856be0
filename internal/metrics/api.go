package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// apiCodes are the statuses the check API gives; their series exist from
// the start.
var apiCodes = []int{200, 400, 401, 404, 405, 429, 499, 503}

// API counts the check API's answers and dropped connections.
type API struct {
	requests *prometheus.CounterVec
	dropped  *prometheus.CounterVec
}

// WatchAPI registers the check API's metrics; serve calls it when api.listen
// is set.
func (m *Metrics) WatchAPI() *API {
	a := &API{requests: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mxguard_api_requests_total",
		Help: "Check API requests by HTTP status (429: rate limited, 503: busy, 499: the client went away).",
	}, []string{"code"}), dropped: m.dropped}
	for _, c := range apiCodes {
		a.requests.WithLabelValues(strconv.Itoa(c))
	}
	m.reg.MustRegister(a.requests)
	return a
}

// ConnectionDropped counts a connection the API closed to make room.
func (a *API) ConnectionDropped(reason string) {
	a.dropped.WithLabelValues("api", reason).Inc()
}

// APIRequest counts one answer.
func (a *API) APIRequest(code int) {
	a.requests.WithLabelValues(strconv.Itoa(code)).Inc()
}
