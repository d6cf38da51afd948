package mgmt

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/api"
	"github.com/tetherhq/tether/server/authn"
	"github.com/tetherhq/tether/server/command"
	"github.com/tetherhq/tether/server/files"
	"github.com/tetherhq/tether/server/group"
	"github.com/tetherhq/tether/server/live"
	"github.com/tetherhq/tether/server/presence"
)

//go:embed openapi.json
var openAPIDoc []byte

// OpenAPI returns the OpenAPI 3 document of the management API.
func OpenAPI() []byte { return openAPIDoc }

const maxBodyBytes = 1 << 20

// Options configure the management API.
type Options struct {
	Store    tether.Store
	Commands *command.Manager
	// Groups manages groups and memberships (nil: one over Store,
	// Notifier and Now).
	Groups   *group.Service
	Notifier tether.Notifier
	Presence *presence.Tracker
	Log      *slog.Logger
	// PollWindow is the comms API's default poll wait; an agent is active
	// while seen within two windows.
	PollWindow time.Duration
	// CommsURLs are handed to agents at enrollment. When empty, the URL is
	// derived from the host the agent reached this API at and CommsPort.
	CommsURLs []string
	// CommsPort is the comms listener's port, for that derivation.
	CommsPort string
	// Ready reports whether the node can serve (for /readyz).
	Ready func(ctx context.Context) error
	// AgentChanged is called after an agent was deleted or re-enrolled, so
	// caches elsewhere on this node can drop it.
	AgentChanged func(agentID string)
	// ConfigChanged is called after a group's configuration changed (or a
	// group was deleted), before its agents are woken, so caches of
	// configuration versions on this node can drop theirs.
	ConfigChanged func()
	// Files stores the files agents download, and its release-signing key
	// is handed to agents at enrollment (nil: the file routes answer
	// not_supported).
	Files *files.Store
	// Metrics serves /metrics (Prometheus text format); nil: 404.
	Metrics http.Handler
	// Now returns the current time (time.Now when nil).
	Now func() time.Time
	// Events is this node's feed of the event batches it accepted, for
	// GET /api/v1/events/stream (nil: that route answers not_supported).
	Events *live.Hub
	// Closing, when closed, ends the progress and event streams, so that a
	// graceful shutdown does not wait for them (nil: never).
	Closing <-chan struct{}
	// ProgressInterval is how often a progress stream reads the counts of
	// its command (0: 250ms); ProgressKeepAlive how long a progress or
	// event stream stays silent before it sends a keep-alive comment (0:
	// 15s).
	ProgressInterval  time.Duration
	ProgressKeepAlive time.Duration
}

// Server is the management API's HTTP handler.
type Server struct {
	o   Options
	mux *http.ServeMux
}

// Route is one route of the management API and the permission it checks.
type Route struct {
	Method  string
	Pattern string
	// Perm is the permission checked; "" marks a public route.
	Perm    tether.Permission
	handler func(*Server, http.ResponseWriter, *http.Request, *tether.Token) error
}

// Routes lists every route of the management API.
func Routes() []Route {
	return []Route{
		{"GET", "/healthz", "", (*Server).healthz},
		{"GET", "/readyz", "", (*Server).readyz},
		{"GET", "/api/v1/openapi.json", "", (*Server).openapi},
		{"GET", "/metrics", "", (*Server).metrics},
		{"POST", "/api/v1/enrollment-tokens", tether.PermTokensWrite, (*Server).createEnrollmentToken},
		{"GET", "/api/v1/enrollment-tokens", tether.PermTokensRead, (*Server).listEnrollmentTokens},
		{"DELETE", "/api/v1/enrollment-tokens/{id}", tether.PermTokensWrite, (*Server).revokeEnrollmentToken},
		{"POST", "/api/v1/tokens", tether.PermUsersManage, (*Server).createToken},
		{"GET", "/api/v1/tokens", tether.PermUsersManage, (*Server).listTokens},
		{"DELETE", "/api/v1/tokens/{id}", tether.PermUsersManage, (*Server).revokeToken},
		{"POST", "/api/v1/agents", tether.PermAgentsRegister, (*Server).registerAgent},
		{"GET", "/api/v1/agents", tether.PermAgentsRead, (*Server).listAgents},
		{"GET", "/api/v1/agents/{id}", tether.PermAgentsRead, (*Server).getAgent},
		{"DELETE", "/api/v1/agents/{id}", tether.PermAgentsWrite, (*Server).deleteAgent},
		{"GET", "/api/v1/agents/{id}/state", tether.PermStateRead, (*Server).agentState},
		{"GET", "/api/v1/agents/{id}/state/{module}", tether.PermStateRead, (*Server).agentState},
		{"POST", "/api/v1/commands", tether.PermCommandsWrite, (*Server).createCommand},
		{"GET", "/api/v1/commands", tether.PermCommandsRead, (*Server).listCommands},
		{"GET", "/api/v1/commands/{id}", tether.PermCommandsRead, (*Server).getCommand},
		{"GET", "/api/v1/commands/{id}/progress", tether.PermCommandsRead, (*Server).commandProgress},
		{"POST", "/api/v1/commands/{id}/cancel", tether.PermCommandsWrite, (*Server).cancelCommand},
		{"GET", "/api/v1/orders", tether.PermCommandsRead, (*Server).listOrders},
		{"GET", "/api/v1/orders/{id}", tether.PermCommandsRead, (*Server).getOrder},
		{"POST", "/api/v1/orders/{id}/cancel", tether.PermCommandsWrite, (*Server).cancelOrder},
		{"GET", "/api/v1/actions", tether.PermCommandsRead, (*Server).listActions},
		{"POST", "/api/v1/groups", tether.PermAgentsWrite, (*Server).createGroup},
		{"GET", "/api/v1/groups", tether.PermAgentsRead, (*Server).listGroups},
		{"GET", "/api/v1/groups/{name}", tether.PermAgentsRead, (*Server).getGroup},
		{"PATCH", "/api/v1/groups/{name}", tether.PermAgentsWrite, (*Server).updateGroup},
		{"DELETE", "/api/v1/groups/{name}", tether.PermAgentsWrite, (*Server).deleteGroup},
		{"PUT", "/api/v1/agents/{id}/groups", tether.PermAgentsWrite, (*Server).setAgentGroups},
		{"POST", "/api/v1/files", tether.PermFilesWrite, (*Server).uploadFile},
		{"GET", "/api/v1/files", tether.PermFilesRead, (*Server).listFiles},
		{"GET", "/api/v1/files/{sha256}", tether.PermFilesRead, (*Server).getFile},
		{"GET", "/api/v1/events/stream", tether.PermEventsRead, (*Server).eventStream},
	}
}

// streamingRoutes read their body as a stream and bound it themselves;
// every other route's body is limited to maxBodyBytes.
var streamingRoutes = map[string]bool{
	"POST /api/v1/files": true,
}

// Streams reports whether the route reads its body as a stream with its
// own limit, instead of a JSON body of at most 1 MiB.
func (rt Route) Streams() bool { return streamingRoutes[rt.Method+" "+rt.Pattern] }

// New returns the management API handler.
func New(o Options) *Server {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = defaultProgressInterval
	}
	if o.ProgressKeepAlive <= 0 {
		o.ProgressKeepAlive = defaultProgressKeepAlive
	}
	if o.AgentChanged == nil {
		o.AgentChanged = func(string) {}
	}
	if o.Groups == nil {
		o.Groups = &group.Service{Store: o.Store, Notifier: o.Notifier, Now: o.Now,
			ForgetAgent: o.AgentChanged, ForgetConfigs: o.ConfigChanged}
	}
	s := &Server{o: o, mux: http.NewServeMux()}
	for _, rt := range Routes() {
		s.mux.Handle(rt.Method+" "+rt.Pattern, s.wrap(rt))
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, s.o.Log, tether.Errorf(tether.ENOTFOUND, "no route %s %s (see /api/v1/openapi.json)", r.Method, r.URL.Path))
	})
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Server) wrap(rt Route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var tok *tether.Token
		if rt.Perm != "" {
			var err error
			if tok, err = s.authorize(r, rt.Perm); err != nil {
				writeError(w, r, s.o.Log, err)
				return
			}
		}
		if r.Body != nil && !rt.Streams() {
			r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
		}
		if err := rt.handler(s, w, r, tok); err != nil {
			writeError(w, r, s.o.Log, err)
		}
	})
}

// authorize checks the bearer token of r and that its role holds perm.
func (s *Server) authorize(r *http.Request, perm tether.Permission) (*tether.Token, error) {
	raw, ok := authn.BearerToken(r.Header.Get("Authorization"))
	if !ok {
		return nil, tether.Errorf(tether.EUNAUTHORIZED, "missing bearer token (send Authorization: Bearer <token>)")
	}
	id, secret, ok := authn.ParseAPIToken(raw)
	if !ok {
		return nil, tether.Errorf(tether.EUNAUTHORIZED, "malformed token: Tether tokens start with %q", authn.APITokenPrefix)
	}
	tok, err := s.o.Store.Token(r.Context(), id)
	if tether.ErrorCode(err) == tether.ENOTFOUND {
		return nil, tether.Errorf(tether.EUNAUTHORIZED, "unknown token")
	} else if err != nil {
		return nil, err
	}
	if !authn.Matches(tok.SecretHash, secret) {
		return nil, tether.Errorf(tether.EUNAUTHORIZED, "unknown token")
	}
	if err := tok.Usable(s.o.Now()); err != nil {
		return nil, err
	}
	if !tok.Role.Can(perm) {
		return nil, tether.Errorf(tether.EFORBIDDEN, "a token in the role %s may not do this (needs %s)", tok.Role, perm)
	}
	return tok, nil
}

// decode reads a JSON body into v, refusing unknown fields and trailing
// data, with errors that name the field at fault.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var tooBig *http.MaxBytesError
	switch {
	case err == nil:
		if dec.More() {
			return tether.Errorf(tether.EINVALID, "invalid JSON body: data after the object")
		}
		return nil
	case errors.Is(err, io.EOF):
		return tether.Errorf(tether.EINVALID, "empty body: want a JSON object")
	case errors.As(err, &tooBig):
		return &tether.Error{Code: tether.ETOOLARGE, Message: fmt.Sprintf("body larger than %d bytes", tooBig.Limit)}
	case errors.As(err, &syn):
		return tether.Errorf(tether.EINVALID, "invalid JSON body at byte %d: %v", syn.Offset, syn)
	case errors.As(err, &typ):
		return tether.FieldError(typ.Field, "want a JSON %s", typ.Type.Kind())
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// encoding/json has no typed error for unknown fields.
		f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return tether.FieldError(f, "unknown field")
	}
	return tether.Errorf(tether.EINVALID, "invalid JSON body: %v", err)
}

// noBody checks the body of a route that takes none: it may be absent,
// empty or {}; anything else is refused like an unknown field.
func noBody(r *http.Request) error {
	data, err := io.ReadAll(r.Body)
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return &tether.Error{Code: tether.ETOOLARGE, Message: fmt.Sprintf("body larger than %d bytes", tooBig.Limit)}
	case err != nil:
		return tether.Errorf(tether.EINVALID, "read body: %v", err)
	case len(bytes.TrimSpace(data)) == 0:
		return nil
	}
	r.Body = io.NopCloser(bytes.NewReader(data))
	var none struct{}
	return decode(r, &none)
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request, _ *tether.Token) error {
	writeJSON(w, http.StatusOK, api.Health{Status: "ok"})
	return nil
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request, _ *tether.Token) error {
	checks := map[string]string{"store": "ok"}
	status := http.StatusOK
	if err := s.o.Store.Ping(r.Context()); err != nil {
		s.o.Log.Warn("readiness: store unavailable", "err", err)
		checks["store"], status = "unavailable", http.StatusServiceUnavailable
	}
	if s.o.Ready != nil {
		checks["server"] = "ok"
		if err := s.o.Ready(r.Context()); err != nil {
			checks["server"], status = "unavailable", http.StatusServiceUnavailable
		}
	}
	h := api.Health{Status: "ok", Checks: checks}
	if status != http.StatusOK {
		h.Status = "unavailable"
	}
	writeJSON(w, status, h)
	return nil
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request, _ *tether.Token) error {
	if s.o.Metrics == nil {
		return tether.Errorf(tether.ENOTFOUND, "metrics are not enabled on this node")
	}
	s.o.Metrics.ServeHTTP(w, r)
	return nil
}

func (s *Server) openapi(w http.ResponseWriter, _ *http.Request, _ *tether.Token) error {
	w.Header().Set("Content-Type", "application/json")
	_, err := w.Write(openAPIDoc)
	return err
}
