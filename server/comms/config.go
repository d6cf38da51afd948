package comms

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tetherhq/tether"
	commsv1 "github.com/tetherhq/tether/gen/tether/comms/v1"
)

// GetConfig implements the AgentService RPC.
func (s *Service) GetConfig(ctx context.Context, req *connect.Request[commsv1.GetConfigRequest]) (*connect.Response[commsv1.GetConfigResponse], error) {
	const method = "GetConfig"
	a, err := s.authenticate(ctx, req.Header())
	if err != nil {
		return nil, s.fail(method, err)
	}
	merged, version, err := MergedConfig(ctx, s.o.Store, a.Groups)
	if err != nil {
		return nil, s.fail(method, err)
	}
	if req.Msg.KnownVersion == version {
		return connect.NewResponse(&commsv1.GetConfigResponse{Version: version, Unchanged: true}), nil
	}
	cfg, err := structpb.NewStruct(merged)
	if err != nil {
		return nil, s.fail(method, fmt.Errorf("convert config: %w", err))
	}
	return connect.NewResponse(&commsv1.GetConfigResponse{Version: version, Config: cfg}), nil
}

// configVersions caches the version of the merged configuration of each
// list of groups, so that a poll learns an agent's configuration version
// without reading the store. Entries live agentCacheTTL; ForgetConfigs
// drops them all when a configuration changes through this node.
type configVersions struct {
	mu sync.Mutex
	m  map[string]cachedVersion
}

type cachedVersion struct {
	version string
	at      time.Time
}

// ForgetConfigs drops the cached configuration versions (after a group's
// configuration changed through this node) and, when the Notifier reaches
// other nodes (a tether.ChangeNotifier), tells them to drop theirs.
func (s *Service) ForgetConfigs() {
	s.DropConfigs()
	if cn, ok := s.o.Notifier.(tether.ChangeNotifier); ok {
		cn.ConfigChanged()
	}
}

// configVersion returns the version of the configuration that GetConfig
// gives an agent in groups.
func (s *Service) configVersion(ctx context.Context, groups []string) (string, error) {
	key := strings.Join(groups, "\x00")
	now := time.Now()
	c := &s.configs
	c.mu.Lock()
	v, ok := c.m[key]
	c.mu.Unlock()
	if ok && now.Sub(v.at) < agentCacheTTL {
		return v.version, nil
	}
	_, version, err := MergedConfig(ctx, s.o.Store, groups)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) > 1<<16 {
		c.m = map[string]cachedVersion{}
	}
	c.m[key] = cachedVersion{version: version, at: now}
	c.mu.Unlock()
	return version, nil
}

// MergedConfig merges the configurations of groups, in order, later groups
// overriding earlier ones key by key, and returns it with its version (a
// hash of its canonical JSON).
func MergedConfig(ctx context.Context, store tether.ConfigStore, groups []string) (map[string]any, string, error) {
	cfgs, err := store.GroupConfigs(ctx, groups)
	if err != nil {
		return nil, "", err
	}
	merged := map[string]any{}
	for _, c := range cfgs {
		var doc map[string]any
		if err := json.Unmarshal(c.Doc, &doc); err != nil {
			return nil, "", fmt.Errorf("group %s config: %w", c.Group, err)
		}
		for k, v := range doc {
			merged[k] = v
		}
	}
	canon, err := json.Marshal(merged) // map keys are sorted: canonical
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(canon)
	return merged, hex.EncodeToString(sum[:8]), nil
}
