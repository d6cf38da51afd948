package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"time"
)

// runLoad runs the load against the server, then (with --baseline)
// against the baseline, and writes the report.
func runLoad(ctx context.Context, o options, stdout, stderr io.Writer) error {
	if o.label == "" {
		o.label = fmt.Sprintf("%d agents", o.agents)
	}
	tt, err := newTetherTarget(o)
	if err != nil {
		return err
	}
	rep, err := runAgainst(ctx, o, tt, stderr)
	if err != nil {
		return err
	}
	if o.enrollOnly {
		return nil
	}
	if o.baseline {
		b, err := startBaseline(ctx, stderr)
		if err != nil {
			return fmt.Errorf("start the baseline: %w", err)
		}
		bo := o
		bo.serverPID = b.pid()
		bo.commsURL = b.url
		base, err := runAgainst(ctx, bo, b, stderr)
		b.stop()
		if err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
		rep.Baseline = base
		rep.addRatios()
	}
	if o.reportFile != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.reportFile, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
	}
	if o.output == "json" {
		return writeJSON(stdout, rep)
	}
	return writeTable(stdout, rep)
}

// say prints a progress line on stderr.
func say(w io.Writer, target, format string, args ...any) {
	fmt.Fprintf(w, "%s [%s] %s\n", time.Now().Format("15:04:05"), target, fmt.Sprintf(format, args...))
}

// runAgainst is one run against one target.
func runAgainst(ctx context.Context, o options, t target, stderr io.Writer) (*Report, error) {
	rep := &Report{
		Label: o.label, Target: t.name(), StartedAt: time.Now().UTC(), Machine: machineFacts(), Agents: o.agents,
		Config: RunConfig{
			AgentsPerConnection: o.perConn, DurationSeconds: o.duration.Seconds(), PollWaitSeconds: o.pollWait.Seconds(),
			CommandRate: o.commandRate, EventsPerSecond: o.eventsPerSec, EventSize: o.eventSize,
			BatchIntervalSecs: o.batchInterval.Seconds(), Fanout: o.fanout,
		},
	}
	ips, _ := parseSourceIPs(o.sourceIPs)
	rep.Config.SourceIPs = len(ips)

	// 1. Identities.
	enrollStart := time.Now()
	ids, err := t.identities(ctx, o.agents, func(done int) {
		say(stderr, t.name(), "identities: %d/%d", done, o.agents)
	})
	if err != nil {
		return nil, err
	}
	rep.EnrollSeconds = round3(time.Since(enrollStart).Seconds())
	if o.enrollOnly {
		say(stderr, t.name(), "%d identities in %s", len(ids), o.identities)
		return rep, nil
	}

	f, err := newFleet(o, ids, t.roots(), o.commsURL)
	if err != nil {
		return nil, err
	}
	defer f.close()
	rep.Connections = len(f.conns)

	server := procWatch{pid: t.pid()}
	loader := procWatch{pid: os.Getpid()}
	before := server.sample()
	loaderBefore := loader.sample()

	// 2. Ramp-up.
	agentsCtx, stopAgents := context.WithCancel(ctx)
	var agentsWG sync.WaitGroup
	defer func() { stopAgents(); agentsWG.Wait() }()
	rampStart := time.Now()
	stopProgress := tick(2*time.Second, func() {
		waiting, _ := t.pollsWaiting(ctx)
		say(stderr, t.name(), "ramp-up: %d/%d authenticated, %d polls waiting on the server, errors: %s",
			f.authenticated.Load(), o.agents, waiting, errorsCell(f.errs.snapshot()))
	})
	for i, a := range f.agents {
		if o.connectRate > 0 {
			due := rampStart.Add(time.Duration(float64(i) / o.connectRate * float64(time.Second)))
			if !sleepUntil(ctx, due) {
				stopProgress()
				return nil, ctx.Err()
			}
		}
		agentsWG.Add(1)
		go func() { defer agentsWG.Done(); f.run(agentsCtx, a) }()
	}
	waitCtx, cancelWait := context.WithTimeout(ctx, o.rampTimeout)
	for waitCtx.Err() == nil {
		waiting, err := t.pollsWaiting(waitCtx)
		if err == nil && waiting >= o.agents && int(f.authenticated.Load()) == o.agents {
			break
		}
		sleepUntil(waitCtx, time.Now().Add(200*time.Millisecond))
	}
	cancelWait()
	stopProgress()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	rep.RampSeconds = round3(time.Since(rampStart).Seconds())
	rep.AgentsConnected = int(f.authenticated.Load())
	say(stderr, t.name(), "ramp-up done in %.1f s: %d/%d agents authenticated", rep.RampSeconds, rep.AgentsConnected, o.agents)
	sleepUntil(ctx, time.Now().Add(o.settle))

	// 3. The window.
	windowStart := time.Now()
	serverStart, loaderStart := server.sample(), loader.sample()
	window, endWindow := context.WithTimeout(ctx, o.duration)
	var windowWG sync.WaitGroup
	if o.eventsPerSec > 0 {
		payload := eventPayload(o.eventSize)
		for _, a := range f.agents {
			windowWG.Add(1)
			go func() { defer windowWG.Done(); f.push(window, a, payload) }()
		}
	}
	var sent []sentCommand
	if o.commandRate > 0 {
		sent = sendCommands(window, o, t, f, stderr)
	}
	<-window.Done()
	endWindow()
	windowWG.Wait()
	elapsed := time.Since(windowStart)
	serverEnd, loaderEnd := server.sample(), loader.sample()
	rep.Server = server.stats(before, serverStart, serverEnd, elapsed, rep.AgentsConnected)
	rep.Loader = loader.stats(loaderBefore, loaderStart, loaderEnd, elapsed, rep.AgentsConnected)
	rep.PollsWaiting, _ = t.pollsWaiting(ctx)
	if o.eventsPerSec > 0 {
		pushes := latencyStats(f.pushLatency.values(), 0, false)
		rep.Events = &EventStats{
			AcceptedEvents: f.accepted.Load(), AcceptedBytes: f.acceptedBytes.Load(), Batches: f.batches.Load(),
			EventsPerSecond: round3(float64(f.accepted.Load()) / elapsed.Seconds()),
			BytesPerSecond:  round3(float64(f.acceptedBytes.Load()) / elapsed.Seconds()),
			BatchP50ms:      pushes.P50ms, BatchP99ms: pushes.P99ms,
		}
	}
	if o.commandRate > 0 {
		rep.CommandLatency = commandLatencies(ctx, f, sent)
	}

	// 4. Fan-out.
	if o.fanout {
		rep.Fanout, err = fanout(ctx, o, t, f, rep.AgentsConnected, stderr)
		if err != nil {
			return nil, err
		}
	}
	rep.Errors = f.errs.snapshot()
	return rep, nil
}

// sentCommand is a single command and when its creation was asked for.
type sentCommand struct {
	id    string
	start time.Time
}

// sendCommands sends commands at o.commandRate to random agents until ctx
// ends.
func sendCommands(ctx context.Context, o options, t target, f *fleet, stderr io.Writer) []sentCommand {
	var (
		mu   sync.Mutex
		sent []sentCommand
		wg   sync.WaitGroup
	)
	sem := make(chan struct{}, 64)
	start := time.Now()
	for i := 0; ; i++ {
		if !sleepUntil(ctx, start.Add(time.Duration(float64(i)/o.commandRate*float64(time.Second)))) {
			break
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		a := f.agents[rand.N(len(f.agents))]
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			began := time.Now()
			// The command outlives the window: its result is awaited after.
			id, err := t.command(context.WithoutCancel(ctx), a.id)
			if err != nil {
				f.errs.add("create command", err)
				return
			}
			mu.Lock()
			sent = append(sent, sentCommand{id: id, start: began})
			mu.Unlock()
		}()
	}
	wg.Wait()
	say(stderr, t.name(), "window done: %d commands sent", len(sent))
	return sent
}

// commandLatencies waits up to 30 s for the results of the commands sent,
// and summarises their latencies.
func commandLatencies(ctx context.Context, f *fleet, sent []sentCommand) *LatencyStats {
	deadline := time.Now().Add(30 * time.Second)
	var samples []float64
	missing := 0
	for {
		samples, missing = samples[:0], 0
		for _, c := range sent {
			r := f.track.snapshot(c.id)
			if r.results == 0 {
				missing++
				continue
			}
			samples = append(samples, float64(r.firstResult.Sub(c.start))/float64(time.Millisecond))
		}
		if missing == 0 || time.Now().After(deadline) || !sleepUntil(ctx, time.Now().Add(200*time.Millisecond)) {
			break
		}
	}
	return latencyStats(samples, missing, true)
}

// fanout sends one command to the agents' group and times it until every
// connected agent has answered (or o.fanoutTimeout).
func fanout(ctx context.Context, o options, t target, f *fleet, connected int, stderr io.Writer) (*FanoutStats, error) {
	say(stderr, t.name(), "fan-out: one command to the %d agents of group %s", connected, o.group)
	start := time.Now()
	id, err := t.groupCommand(ctx)
	if err != nil {
		return nil, fmt.Errorf("fan-out command: %w", err)
	}
	st := &FanoutStats{Agents: connected, CreateMs: ms(time.Since(start))}
	deadline := time.Now().Add(o.fanoutTimeout)
	stop := tick(time.Second, func() {
		r := f.track.snapshot(id)
		say(stderr, t.name(), "fan-out: %d delivered, %d results of %d", r.delivered, r.results, connected)
	})
	defer stop()
	var r requestTrack
	for {
		r = f.track.snapshot(id)
		if r.results >= connected || time.Now().After(deadline) {
			break
		}
		if !sleepUntil(ctx, time.Now().Add(20*time.Millisecond)) {
			return nil, ctx.Err()
		}
	}
	st.Delivered, st.Results, st.Complete = r.delivered, r.results, r.results >= connected
	if r.delivered > 0 {
		st.FirstDeliveryMs = ms(r.firstDelivery.Sub(start))
		st.LastDeliveryMs = ms(r.lastDelivery.Sub(start))
	}
	if r.results > 0 {
		st.AllResultsMs = ms(r.lastResult.Sub(start))
	}
	if !st.Complete {
		say(stderr, t.name(), "fan-out: only %d of %d results after %s", r.results, connected, o.fanoutTimeout)
	}
	return st, nil
}

// eventPayload is a JSON object of exactly size bytes.
func eventPayload(size int) []byte {
	const head, tail = `{"sample":"`, `"}`
	pad := size - len(head) - len(tail)
	return []byte(head + strings.Repeat("x", max(0, pad)) + tail)
}

// sleepUntil sleeps until t; false when ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// procWatch samples a process (nothing when pid is 0).
type procWatch struct{ pid int }

func (p procWatch) sample() *procSample {
	if p.pid == 0 {
		return nil
	}
	s, err := readProc(p.pid)
	if err != nil {
		return nil
	}
	return &s
}

// stats are the process's figures: RSS before the agents connected and at
// the end of the window, CPU over the window.
func (p procWatch) stats(before, start, end *procSample, window time.Duration, agents int) *ProcStats {
	if before == nil || start == nil || end == nil {
		return nil
	}
	st := &ProcStats{PID: p.pid, RSSBytesBefore: before.rss, RSSBytes: end.rss}
	if agents > 0 {
		st.RSSPerAgentBytes = round3(float64(end.rss-before.rss) / float64(agents))
	}
	st.CPUSeconds = round3(float64(end.cpuTick-start.cpuTick) / clockTicks)
	if window > 0 {
		st.CPUPercent = round3(st.CPUSeconds / window.Seconds() * 100)
	}
	return st
}
