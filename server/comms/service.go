package comms

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"

	"github.com/tetherhq/tether"
	commsv1 "github.com/tetherhq/tether/gen/tether/comms/v1"
	"github.com/tetherhq/tether/gen/tether/comms/v1/commsv1connect"
	"github.com/tetherhq/tether/server/authn"
	"github.com/tetherhq/tether/server/files"
	"github.com/tetherhq/tether/server/ingest"
	"github.com/tetherhq/tether/server/metrics"
	"github.com/tetherhq/tether/server/presence"
)

// Defaults of Options.
const (
	DefaultPollWait     = 50 * time.Second
	DefaultMaxPollWait  = 120 * time.Second
	DefaultMaxBodyBytes = 8 << 20
	DefaultMaxOrders    = 100
	// agentCacheTTL is how long this node keeps an agent record (and a
	// configuration version) without reading the store again. A change
	// made through any node drops it at once (Forget here, the cluster's
	// notifications on the others, everything after a lost connection), so
	// this only bounds a change made behind Tether's back (by hand in the
	// database). It is longer than the longest poll wait, so an idle
	// agent's next poll finds its record still here: reading it on each
	// poll cost a node of 100,000 idle agents 2,000 reads a second, and a
	// fan-out to them one read per agent.
	agentCacheTTL = 3 * time.Minute
)

// Options configure the comms service.
type Options struct {
	Store    tether.Store
	Sinks    []tether.Sink
	Notifier tether.Notifier
	Keys     *authn.Keyring
	Presence *presence.Tracker
	Log      *slog.Logger
	// Files, when set, serves the files agents download at
	// GET /api/v1/files/{sha256}.
	Files *files.Store
	// Metrics, when set, records calls, deliveries and results.
	Metrics *metrics.Metrics
	// PollWait is the default long-poll wait, MaxPollWait its upper bound.
	PollWait    time.Duration
	MaxPollWait time.Duration
	// MaxBodyBytes caps a request body, before and after decompression.
	MaxBodyBytes int64
	// Limits are the agents' event rates and the node's in-flight budget
	// of event pushes (zero: no limits; tether-server starts from
	// ingest.DefaultLimits()).
	Limits ingest.Limits
	// MaxWaitingPolls bounds the polls waiting at once (0: no limit): past
	// it, a poll that would wait is answered at once RESOURCE_EXHAUSTED,
	// with a delay between PollRetryDelay (DefaultPollRetryDelay when
	// zero) and twice it. A poll that has something to answer is never
	// refused.
	MaxWaitingPolls int
	PollRetryDelay  time.Duration
	// Closing, when closed, makes waiting polls return at once (shutdown).
	Closing <-chan struct{}
	// Now returns the current time (time.Now when nil).
	Now func() time.Time
}

// Service implements commsv1connect.AgentServiceHandler.
type Service struct {
	o        Options
	deliver  *deliverer
	finish   *finisher
	configs  configVersions
	limiter  *ingest.Limiter
	ingester *ingest.Ingester
	waiting  atomic.Int64 // polls waiting (enterWait)

	mu        sync.Mutex
	agents    map[string]cachedAgent
	nextPrune time.Time // when agent drops the expired entries again

	qmu   sync.Mutex
	quiet map[string]quietMark // agents whose last poll found nothing (quiet.go)
}

// cachedAgent is a cached agent record, nil for a deleted agent. It keeps
// only what the comms API uses of it (the id, the name, which batches
// carry to the sinks, the groups, whether the agent is disabled): a node
// holds one per connected agent, and facts, times and key hashes would
// double its size.
type cachedAgent struct {
	agent *tether.Agent
	at    time.Time
}

var _ commsv1connect.AgentServiceHandler = (*Service)(nil)

// New returns the service.
func New(o Options) *Service {
	if o.PollWait <= 0 {
		o.PollWait = DefaultPollWait
	}
	if o.MaxPollWait <= 0 {
		o.MaxPollWait = DefaultMaxPollWait
	}
	if o.PollWait > o.MaxPollWait {
		o.PollWait = o.MaxPollWait
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.PollRetryDelay <= 0 {
		o.PollRetryDelay = DefaultPollRetryDelay
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Service{
		o: o, agents: map[string]cachedAgent{}, quiet: map[string]quietMark{}, deliver: &deliverer{store: o.Store, now: o.Now},
		finish:   &finisher{store: o.Store, now: o.Now},
		limiter:  ingest.NewLimiter(o.Limits, nil, o.Metrics),
		ingester: ingest.New(ingest.Options{Store: o.Store, Sinks: o.Sinks, Metrics: o.Metrics, Log: o.Log, Now: o.Now}),
	}
}

// Handler returns the HTTP handler of the comms API: the AgentService
// (gRPC, gRPC-Web and Connect), gRPC server reflection, and the files
// agents download (GET /api/v1/files/{sha256}). Request bodies
// larger than MaxBodyBytes are refused without being read whole, and
// compressed ones (zstd or gzip) once their decompression passes
// MaxBodyBytes.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	// The body limit comes first (bodyLimit, then the decompressors), so
	// connect-go's own read limit, which answers RESOURCE_EXHAUSTED (an
	// error agents retry), is never reached.
	limit := s.o.MaxBodyBytes + 64<<10 // room for envelope framing
	opts := append(compressionOptions(s.o.MaxBodyBytes, s.o.Metrics),
		connect.WithReadMaxBytes(int(limit)),
		connect.WithSendMaxBytes(int(s.o.MaxBodyBytes)),
	)
	path, h := commsv1connect.NewAgentServiceHandler(s, opts...)
	mux.Handle(path, h)
	reflector := grpcreflect.NewStaticReflector(commsv1connect.AgentServiceName)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	mux.HandleFunc("GET "+FilePath+"{sha256}", s.serveFile)
	errw := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > limit {
			s.o.Metrics.Rejected("comms", "body", connect.CodeInvalidArgument.String())
			_ = errw.Write(w, r, tooLarge("request body", limit))
			return
		}
		r.Body = &bodyLimit{ReadCloser: r.Body, capped: capped{max: limit, err: func() error {
			s.o.Metrics.Rejected("comms", "body", connect.CodeInvalidArgument.String())
			return tooLarge("request body", limit)
		}}}
		mux.ServeHTTP(w, r)
	})
}

// Forget drops the cached record of an agent (after it was deleted or
// changed through this node) and, when the Notifier reaches other nodes
// (a tether.ChangeNotifier), tells them to drop theirs.
func (s *Service) Forget(agentID string) {
	s.DropAgent(agentID)
	if cn, ok := s.o.Notifier.(tether.ChangeNotifier); ok {
		cn.AgentChanged(agentID)
	}
}

// authenticate checks the bearer token of a call and returns its agent.
func (s *Service) authenticate(ctx context.Context, h http.Header) (*tether.Agent, error) {
	token, ok := authn.BearerToken(h.Get("Authorization"))
	if !ok {
		return nil, tether.Errorf(tether.EUNAUTHORIZED, "missing bearer token: call Authenticate and send Authorization: Bearer <token>")
	}
	now := s.o.Now()
	id, err := s.o.Keys.Verify(ctx, token, now)
	if err != nil {
		return nil, err
	}
	a, err := s.agent(ctx, id)
	if err != nil {
		return nil, err
	}
	s.o.Presence.Seen(id, now.UTC())
	return a, nil
}

// agent returns the agent record from a short-lived cache. A deleted agent
// is EFORBIDDEN, a disabled one too.
func (s *Service) agent(ctx context.Context, id string) (*tether.Agent, error) {
	now := time.Now()
	s.mu.Lock()
	c, ok := s.agents[id]
	s.mu.Unlock()
	if ok && now.Sub(c.at) < agentCacheTTL {
		return checkAgent(id, c.agent)
	}
	a, err := s.o.Store.Agent(ctx, id)
	if err != nil && tether.ErrorCode(err) != tether.ENOTFOUND {
		return nil, err
	}
	if a != nil {
		a = &tether.Agent{ID: a.ID, Name: a.Name, Groups: a.Groups, Disabled: a.Disabled}
	}
	s.mu.Lock()
	// Entries of agents that went away (to another node, or off) are
	// dropped once expired, rather than kept until the map holds a
	// million: a map never gives back the room it grew to.
	if now.After(s.nextPrune) || len(s.agents) > 1<<20 {
		for k, c := range s.agents {
			if now.Sub(c.at) >= agentCacheTTL {
				delete(s.agents, k)
			}
		}
		s.nextPrune = now.Add(agentCacheTTL)
		if len(s.agents) > 1<<20 {
			clear(s.agents)
		}
	}
	// Entries expire between half the lifetime and all of it: agents that
	// connected together (after a restart, say) must not all be read
	// again in the same second.
	s.agents[id] = cachedAgent{agent: a, at: now.Add(-rand.N(agentCacheTTL / 2))}
	s.mu.Unlock()
	return checkAgent(id, a)
}

func checkAgent(id string, a *tether.Agent) (*tether.Agent, error) {
	switch {
	case a == nil:
		return nil, tether.Errorf(tether.EFORBIDDEN, "agent %s was removed from the server: enroll again", id)
	case a.Disabled:
		return nil, tether.Errorf(tether.EFORBIDDEN, "agent %s is disabled on the server", id)
	}
	return a, nil
}

// Authenticate implements the AgentService RPC.
func (s *Service) Authenticate(ctx context.Context, req *connect.Request[commsv1.AuthenticateRequest]) (*connect.Response[commsv1.AuthenticateResponse], error) {
	const method = "Authenticate"
	id, key := req.Msg.GetAgentId(), req.Msg.GetAgentKey()
	if !tether.ValidID(id) {
		return nil, s.fail(method, tether.FieldError("agent_id", "want the agent id from enrollment (a lowercase UUID)"))
	}
	if key == "" || len(key) > 256 {
		return nil, s.fail(method, tether.FieldError("agent_key", "want the agent key from enrollment"))
	}
	a, err := s.o.Store.Agent(ctx, id)
	switch {
	case tether.ErrorCode(err) == tether.ENOTFOUND:
		return nil, s.fail(method, tether.Errorf(tether.EFORBIDDEN, "agent %s is not enrolled on this server: enroll again", id))
	case err != nil:
		return nil, s.fail(method, err)
	case !authn.Matches(a.KeyHash, key):
		return nil, s.fail(method, tether.Errorf(tether.EUNAUTHORIZED, "wrong agent key"))
	case a.Disabled:
		return nil, s.fail(method, tether.Errorf(tether.EFORBIDDEN, "agent %s is disabled on the server", id))
	}
	if v := req.Msg.GetAgentVersion(); v != "" && v != a.Version {
		if len(v) > 64 || !utf8.ValidString(v) {
			return nil, s.fail(method, tether.FieldError("agent_version", "at most 64 bytes of UTF-8"))
		}
		// An upgraded agent: its record shows the version it runs now.
		if err := s.o.Store.SetAgentVersion(ctx, id, v); err != nil {
			return nil, s.fail(method, err)
		}
		s.Forget(id)
		s.o.Log.Info("agent version changed", "agent", id, "from", a.Version, "to", v)
	}
	now := s.o.Now()
	token, exp, err := s.o.Keys.Issue(id, now)
	if err != nil {
		return nil, s.fail(method, err)
	}
	s.o.Presence.Seen(id, now.UTC())
	return connect.NewResponse(&commsv1.AuthenticateResponse{
		Token: token, ExpiresAt: timestamp(exp), AgentName: a.Name, Groups: a.Groups,
	}), nil
}
