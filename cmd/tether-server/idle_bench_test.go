package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tetherhq/tether/api"
	"github.com/tetherhq/tether/client"
)

// Environment of BenchmarkIdleAgentMemory.
const (
	// idleAgentsEnv sets the number of agents (default 2,000).
	idleAgentsEnv = "TETHER_IDLE_AGENTS"
	// idleProfilesEnv names a directory where the benchmark writes the
	// heap and goroutine profiles of the node with every poll waiting.
	idleProfilesEnv = "TETHER_IDLE_PROFILES"
	// idleClientsEnv selects the client process (TestIdleAgentClients):
	// the file of agent ids and keys it connects.
	idleClientsEnv = "TETHER_IDLE_CLIENTS"
	// idlePushEnv makes each agent push one batch of that many KiB of
	// incompressible events before it polls (default 0: none), as agents
	// that send events do.
	idlePushEnv = "TETHER_IDLE_PUSH_KIB"
)

// BenchmarkIdleAgentMemory measures what a connected agent whose long-poll
// is waiting costs a node: the node runs in this process; N agents (the
// client package, one connection each) run in a child process, so that
// the figures hold the server's side only. Memory is read before the
// agents connect and once all their polls wait, after a collection that
// also returns freed memory to the system, and divided by N:
//
//	go test -run '^$' -bench IdleAgentMemory -benchtime 1x ./cmd/tether-server/
//
// TETHER_IDLE_AGENTS sets N (default 2,000); TETHER_IDLE_PUSH_KIB=K has
// each agent push a batch of K KiB first; TETHER_IDLE_PROFILES=DIR writes
// heap.pprof and goroutine.pprof of the waiting state there, for go tool
// pprof -top / -list. docs/benchmarks.md has the figures.
func BenchmarkIdleAgentMemory(b *testing.B) {
	n := 2000
	if v := os.Getenv(idleAgentsEnv); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("%s=%q: want a positive number", idleAgentsEnv, v)
		}
	}
	profiles := os.Getenv(idleProfilesEnv)
	if profiles != "" {
		// Sample finely enough to see a few hundred bytes per agent.
		runtime.MemProfileRate = 4096
		defer func() { runtime.MemProfileRate = 512 * 1024 }()
	}
	for range b.N {
		idleAgentMemory(b, n, profiles)
	}
}

func idleAgentMemory(b *testing.B, n int, profiles string) {
	dir := b.TempDir()
	cfg := defaultConfig()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.CommsAddr, cfg.APIAddr = "127.0.0.1:0", "127.0.0.1:0"
	if err := cfg.validate(); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	node, err := startNode(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := node.Shutdown(sctx); err != nil {
			b.Errorf("shutdown: %v", err)
		}
	}()

	agents := filepath.Join(dir, "agents")
	registerIdleAgents(b, node, n, agents)

	before := readIdleMemory()
	child := exec.Command(os.Args[0], "-test.run=^TestIdleAgentClients$", "-test.bench=^$", "-test.count=1", "-test.timeout=0")
	child.Env = append(os.Environ(), idleClientsEnv+"="+agents, "TETHER_IDLE_COMMS="+node.CommsURL, "TETHER_IDLE_CA="+node.CACertFile)
	child.Stdout, child.Stderr = os.Stderr, os.Stderr
	stdin, err := child.StdinPipe() // the child stops when it closes
	if err != nil {
		b.Fatal(err)
	}
	if err := child.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()
	defer func() {
		stdin.Close()
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = child.Process.Kill()
			<-exited
		}
	}()

	deadline := time.Now().Add(time.Duration(n)*20*time.Millisecond + time.Minute)
	for node.notifier.Waiting() < n {
		select {
		case err := <-exited:
			b.Fatalf("the client process ended: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d polls waiting after %v", node.notifier.Waiting(), n, time.Until(deadline))
		}
	}
	// Every poll is subscribed; let the last of them finish their first
	// look (the goroutine count stops moving), within a deadline.
	for prev, settle := -1, time.Now().Add(30*time.Second); time.Now().Before(settle); {
		g := runtime.NumGoroutine()
		if g == prev {
			break
		}
		prev = g
		time.Sleep(500 * time.Millisecond)
	}
	after := readIdleMemory()
	if w := node.notifier.Waiting(); w != n {
		b.Fatalf("%d polls waiting at the measurement, want %d", w, n)
	}
	if profiles != "" {
		writeIdleProfiles(b, profiles)
	}

	per := func(a, z uint64) float64 { return (float64(z) - float64(a)) / float64(n) }
	b.ReportMetric(per(before.heap, after.heap), "heap-B/agent")
	b.ReportMetric(per(before.stack, after.stack), "stack-B/agent")
	b.ReportMetric(per(before.rss, after.rss), "rss-B/agent")
	b.ReportMetric(per(uint64(before.goroutines), uint64(after.goroutines)), "goroutines/agent")
	b.Logf("%d agents: heap %d → %d, stack %d → %d, RSS %d → %d, goroutines %d → %d",
		n, before.heap, after.heap, before.stack, after.stack, before.rss, after.rss, before.goroutines, after.goroutines)
}

// registerIdleAgents enrolls n agents through the management API, in the
// group "idle", and writes "ID KEY" lines to path.
func registerIdleAgents(b *testing.B, node *Node, n int, path string) {
	ctx := context.Background()
	admin, err := api.New(api.Options{Server: node.APIURL, Token: node.AdminToken, CACertFile: node.CACertFile})
	if err != nil {
		b.Fatal(err)
	}
	et, err := admin.CreateEnrollmentToken(ctx, api.CreateEnrollmentTokenRequest{Groups: []string{"idle"}, MaxUses: n, TTL: "1h"})
	if err != nil {
		b.Fatal(err)
	}
	enroll, err := api.New(api.Options{Server: node.APIURL, Token: et.Token, CACertFile: node.CACertFile})
	if err != nil {
		b.Fatal(err)
	}
	lines := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				id := uuid.NewString()
				reg, err := enroll.RegisterAgent(ctx, api.RegisterAgentRequest{ID: id, Name: fmt.Sprintf("idle-%d", i)})
				if err != nil {
					errs <- err
					continue
				}
				lines[i] = id + " " + reg.AgentKey
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
}

type idleMemory struct {
	heap, stack, rss uint64
	goroutines       int
}

// readIdleMemory collects garbage (twice: what sync.Pools held goes with
// the second), returns the freed memory to the system and reads the heap
// in use, the stacks in use, the resident set and the goroutines.
func readIdleMemory() idleMemory {
	runtime.GC()
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return idleMemory{heap: ms.HeapInuse, stack: ms.StackInuse, rss: vmRSS(), goroutines: runtime.NumGoroutine()}
}

// vmRSS returns the process's resident set (VmRSS in /proc/self/status),
// 0 where there is no /proc.
func vmRSS() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func writeIdleProfiles(b *testing.B, dir string) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	for _, name := range []string{"heap", "goroutine"} {
		f, err := os.Create(filepath.Join(dir, name+".pprof"))
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("profiles in %s: go tool pprof -sample_index=inuse_space -top %s", dir, filepath.Join(dir, "heap.pprof"))
}

// TestIdleAgentClients is the client process of BenchmarkIdleAgentMemory
// (skipped otherwise): it connects the agents of the file named by
// TETHER_IDLE_CLIENTS, each with a client of its own (its own transport
// and connection), and holds a long-poll for each until its standard
// input closes.
func TestIdleAgentClients(t *testing.T) {
	path := os.Getenv(idleClientsEnv)
	if path == "" {
		t.Skip("the client process of BenchmarkIdleAgentMemory")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pemCA, err := os.ReadFile(os.Getenv("TETHER_IDLE_CA"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pemCA)
	var batch []client.Event
	if kib, _ := strconv.Atoi(os.Getenv(idlePushEnv)); kib > 0 {
		for i := range kib / 4 {
			payload := make([]byte, 4<<10)
			_, _ = rand.Read(payload) // as zstd leaves it
			batch = append(batch, client.Event{ID: strconv.Itoa(i), Module: "bench", Type: "blob", CollectedAt: time.Now(), Payload: payload, Protobuf: true})
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { // the parent closes standard input when it is done
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	var wg sync.WaitGroup
	connecting := make(chan struct{}, 32) // handshakes at once
	for line := range strings.Lines(string(data)) {
		id, key, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		c, err := client.New(client.Config{URLs: []string{os.Getenv("TETHER_IDLE_COMMS")}, AgentID: id, AgentKey: key, RootCAs: roots})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			connecting <- struct{}{}
			_, err := c.Authenticate(ctx)
			if err == nil && batch != nil {
				_, _, err = c.PushStateless(ctx, 1, batch)
			}
			<-connecting
			if err != nil {
				if ctx.Err() == nil {
					t.Errorf("agent %s: %v", id, err)
				}
				return
			}
			for ctx.Err() == nil {
				if _, err := c.Poll(ctx, client.PollRequest{Wait: 100 * time.Second}); err != nil && ctx.Err() == nil {
					t.Logf("agent %s: %v", id, err)
					time.Sleep(time.Second)
				}
			}
		})
	}
	wg.Wait()
}
