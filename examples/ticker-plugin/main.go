// Command ticker-plugin is an example tether-agent plugin: it sends a
// "tick" event at a fixed interval, and keeps the number of its runs in its
// state directory. It shows the whole protocol: read Start, write Event and
// Log frames, read Ack and Stop.
//
// Configure it in agent.yaml (build it into DATA/plugins first):
//
//	plugins:
//	  - name: ticker
//	    command: ticker-plugin
//	    config: {interval: 10s}
//
// Its config keys: interval (a Go duration, default 10s); exit_after (exit
// with status 3 after that many ticks, to see the agent restart it;
// default 0: never).
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	pluginv1 "github.com/tetherhq/tether/gen/tether/plugin/v1"
	"github.com/tetherhq/tether/plugin"
	"google.golang.org/protobuf/types/known/timestamppb"
)

type config struct {
	Interval  string `json:"interval"`
	ExitAfter int    `json:"exit_after"`
}

// tick is the payload of a "tick" event.
type tick struct {
	Run int `json:"run"` // how many times the plugin was started, this run included
	N   int `json:"n"`   // the tick's number in this run, from 1
	PID int `json:"pid"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ticker-plugin:", err)
		os.Exit(1)
	}
}

func run() error {
	in := bufio.NewReader(os.Stdin)
	out := plugin.NewWriter(os.Stdout)

	// The first frame is Start.
	var first pluginv1.AgentMessage
	if err := plugin.ReadMessage(in, &first); err != nil {
		return fmt.Errorf("read start: %w", err)
	}
	start := first.GetStart()
	if start == nil {
		return fmt.Errorf("first frame is not Start: %v", &first)
	}
	cfg := config{Interval: "10s"}
	if len(start.GetConfig()) > 0 && string(start.GetConfig()) != "null" {
		if err := json.Unmarshal(start.GetConfig(), &cfg); err != nil {
			return fmt.Errorf("config: %w", err)
		}
	}
	interval, err := time.ParseDuration(cfg.Interval)
	if err != nil || interval <= 0 {
		return fmt.Errorf("config: interval %q is not a positive duration", cfg.Interval)
	}
	runNo := countRun(start.GetStateDir())

	// Then Ack and Stop frames arrive while we work: read them aside.
	stop := make(chan struct{})
	go func() {
		defer close(stop)
		for {
			var m pluginv1.AgentMessage
			if err := plugin.ReadMessage(in, &m); err != nil {
				return // stdin closed: the agent wants us gone
			}
			if m.GetStop() != nil {
				return
			}
			// An Ack: a real plugin would now forget the events up to
			// m.GetAck().GetSequence(); this one keeps nothing.
		}
	}()

	_ = out.Write(&pluginv1.PluginMessage{Message: &pluginv1.PluginMessage_Log{Log: &pluginv1.Log{
		Level: pluginv1.LogLevel_LOG_LEVEL_INFO, Message: fmt.Sprintf("ticker run %d started, every %s", runNo, interval)}}})
	t := time.NewTicker(interval)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-stop:
			return nil
		case <-t.C:
		}
		payload, _ := json.Marshal(tick{Run: runNo, N: n, PID: os.Getpid()})
		err := out.Write(&pluginv1.PluginMessage{Message: &pluginv1.PluginMessage_Event{Event: &pluginv1.Event{
			Sequence:    uint64(n),
			Type:        "tick",
			CollectedAt: timestamppb.Now(),
			Payload:     payload,
			Encoding:    pluginv1.PayloadEncoding_PAYLOAD_ENCODING_JSON,
		}}})
		if err != nil {
			return fmt.Errorf("write event: %w", err)
		}
		if cfg.ExitAfter > 0 && n >= cfg.ExitAfter {
			fmt.Fprintf(os.Stderr, "exiting after %d ticks, as configured\n", n)
			os.Exit(3)
		}
	}
}

// countRun increments the run counter kept in the state directory.
func countRun(dir string) int {
	path := filepath.Join(dir, "runs")
	b, _ := os.ReadFile(path)
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	n++
	_ = os.WriteFile(path, []byte(strconv.Itoa(n)+"\n"), 0o600)
	return n
}
