package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestDebugAddrServesProfiles(t *testing.T) {
	cfg := defaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.CommsAddr, cfg.APIAddr, cfg.DebugAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	n, err := startNode(t.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(n.DebugURL, "http://127.0.0.1:") {
		t.Fatalf("DebugURL = %q", n.DebugURL)
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Get(n.DebugURL + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine profile:") {
		t.Fatalf("goroutine profile: %d %.200q", resp.StatusCode, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if resp, err := hc.Get(n.DebugURL + "/debug/pprof/"); err == nil {
		resp.Body.Close()
		t.Fatal("the debug listener still answers after Shutdown")
	}
}

func TestDebugAddrOffByDefault(t *testing.T) {
	n := testNode(t, t.TempDir())
	if n.DebugURL != "" || n.debug != nil {
		t.Fatalf("a debug listener without debug_addr: %q", n.DebugURL)
	}
	cfg := defaultConfig()
	cfg.DebugAddr = "6060"
	if err := cfg.validate(); err == nil || !strings.Contains(err.Error(), "debug_addr") {
		t.Fatalf("debug_addr 6060: %v, want an error naming debug_addr", err)
	}
}
