package checkapi

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"time"

	"github.com/mxguard/mxguard/policy"
)

// Console serves every path outside /v1/ when Config.Console is set: the
// web console (package console). It signs its users in by itself; the API
// still caps its connections and requests.
type Console interface {
	// ServeConsole answers r and returns the status it gave, and whether r
	// carried a valid session (its connection then counts as the panel's).
	ServeConsole(w http.ResponseWriter, r *http.Request, api ConsoleAPI) (code int, signedIn bool)
}

// ConsoleAPI is what the console shares with the API.
type ConsoleAPI interface {
	// RefusedLogin spends the bucket of requests without the right token
	// for a wrong token typed into the console; false and the wait when
	// the bucket is empty.
	RefusedLogin() (ok bool, retryAfter time.Duration)
	// Check runs one check in one of the API's slots, bounded by
	// decision_timeout; ErrBusy when no slot freed in time.
	Check(ctx context.Context, req policy.Request) (*policy.Report, error)
}

// ErrBusy is Check's error when every slot stayed taken.
var ErrBusy = errors.New("busy: too many checks running; try again")

const apiPrefix = "/v1/"

// consoleAPI is ConsoleAPI for one request.
type consoleAPI struct {
	s      *Server
	cfg    *Config
	client netip.Prefix
}

func (c consoleAPI) RefusedLogin() (bool, time.Duration) {
	return c.s.failures.allow(c.client, c.cfg.Rate, time.Now())
}

func (c consoleAPI) Check(ctx context.Context, req policy.Request) (*policy.Report, error) {
	queued, cancelQueue := context.WithTimeout(ctx, c.s.opts.QueueTimeout)
	defer cancelQueue()
	select {
	case c.s.slots <- struct{}{}:
		defer func() { <-c.s.slots }()
	case <-queued.Done():
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return nil, ErrBusy
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DecisionTimeout)
	defer cancel()
	return c.cfg.Engine.Evaluate(ctx, req), nil
}

// serveConsole hands r to the console within the client's request bucket.
func (s *Server) serveConsole(w http.ResponseWriter, r *http.Request, cfg *Config, client netip.Prefix) int {
	if ok, wait := s.limiter.allow(client, cfg.Rate, time.Now()); !ok {
		w.Header().Set("Connection", "close")
		return tooMany(w, cfg.Rate, wait)
	}
	http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.opts.QueueTimeout + cfg.DecisionTimeout + writeMargin))
	code, signedIn := cfg.Console.ServeConsole(w, r, consoleAPI{s: s, cfg: cfg, client: client})
	if signedIn {
		markAuthenticated(r)
	} else {
		w.Header().Set("Connection", "close") // strangers' connections are not kept
	}
	return code
}
