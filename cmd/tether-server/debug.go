package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// serveDebug starts the debug listener when debug_addr is set: Go's
// runtime profiles (net/http/pprof) under /debug/pprof/, plain HTTP,
// without authentication. It is for an operator on the node itself, so
// an address other than loopback is logged as a warning. The node's
// resources close it, so it serves from the start (profiles of the start
// too) until the end.
func (n *Node) serveDebug() error {
	if n.cfg.DebugAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", n.cfg.DebugAddr)
	if err != nil {
		return fmt.Errorf("debug_addr: %w", err)
	}
	if !ln.Addr().(*net.TCPAddr).IP.IsLoopback() {
		n.log.Warn("debug_addr is not a loopback address: anyone who reaches it reads the process's profiles", "debug_addr", ln.Addr().String())
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	n.debug = srv
	n.DebugURL = "http://" + ln.Addr().String()
	// Not one of n.wg's: it serves until closeResources, after the wait.
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			select {
			case n.errc <- fmt.Errorf("debug listener: %w", err):
			default:
			}
		}
	}()
	n.log.Info("serving runtime profiles", "url", n.DebugURL+"/debug/pprof/")
	return nil
}
