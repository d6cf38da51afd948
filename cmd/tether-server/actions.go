package main

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/command"
)

// serverHandlers are the actions a node runs for server-target commands.
func (n *Node) serverHandlers() map[string]command.ServerHandler {
	return map[string]command.ServerHandler{
		"rotate-signing-key": func(ctx context.Context, _ *tether.Order) (tether.OrderStatus, tether.Result) {
			kid, err := n.keys.Rotate(ctx)
			if err != nil {
				n.log.Error("rotate signing key", "err", err)
				return tether.OrderFailure, tether.Result{Message: "could not rotate the signing key: " + tether.ErrorMessage(err)}
			}
			return tether.OrderSuccess, tether.Result{
				Message: "new signing key " + kid + "; tokens signed by older keys stay valid until they expire",
				Data:    jsonObject(map[string]any{"kid": kid}),
			}
		},
		"reload-config": func(context.Context, *tether.Order) (tether.OrderStatus, tether.Result) {
			return n.reloadConfig()
		},
	}
}

// reloadConfig re-reads the configuration file. Settings that can change
// while running (log_level) are applied; the result lists the changed keys
// that need a restart.
func (n *Node) reloadConfig() (tether.OrderStatus, tether.Result) {
	if n.cfg.path == "" {
		return tether.OrderSuccess, tether.Result{Message: "this node runs without a configuration file: nothing to reload"}
	}
	next := defaultConfig()
	if err := readConfigFile(&next, n.cfg.path); err != nil {
		return tether.OrderFailure, tether.Result{Message: err.Error()}
	}
	// Flags given at start keep their values.
	next.DataDir, next.CommsAddr, next.APIAddr = n.cfg.DataDir, n.cfg.CommsAddr, n.cfg.APIAddr
	next.Store = n.cfg.Store
	if err := next.validate(); err != nil {
		return tether.OrderFailure, tether.Result{Message: err.Error()}
	}
	applied := []string{}
	if next.LogLevel != n.cfg.LogLevel && n.cfg.level != nil {
		lvl, _ := parseLevel(next.LogLevel)
		n.cfg.level.Set(lvl)
		n.cfg.LogLevel = next.LogLevel
		applied = append(applied, "log_level")
	}
	restart := changedKeys(n.cfg, next)
	msg := fmt.Sprintf("reloaded %s: applied %v", n.cfg.path, applied)
	if len(restart) > 0 {
		msg += fmt.Sprintf("; restart the node to apply %v", restart)
	}
	n.log.Info("configuration reloaded", "applied", applied, "restart_required", restart)
	return tether.OrderSuccess, tether.Result{Message: msg, Data: jsonObject(map[string]any{"applied": applied, "restart_required": restart})}
}

// changedKeys lists the YAML keys whose values differ between a and b.
func changedKeys(a, b Config) []string {
	out := []string{}
	ta, va, vb := reflect.TypeOf(a), reflect.ValueOf(a), reflect.ValueOf(b)
	for i := 0; i < ta.NumField(); i++ {
		f := ta.Field(i)
		tag := f.Tag.Get("yaml")
		if tag == "" || tag == "-" || !f.IsExported() {
			continue
		}
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			out = append(out, tag)
		}
	}
	sort.Strings(out)
	return out
}

// jsonObject encodes v for a result's data; v is always encodable here.
func jsonObject(v map[string]any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	return b
}
