package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestParseSourceIPs(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []string
		wantErr string
	}{
		{in: "", want: nil},
		{in: "127.0.0.2-127.0.0.4", want: []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}},
		{in: "127.0.0.255-127.0.1.1", want: []string{"127.0.0.255", "127.0.1.0", "127.0.1.1"}},
		{in: "127.0.0.2, 127.0.0.9", want: []string{"127.0.0.2", "127.0.0.9"}},
		{in: "127.0.0.5-127.0.0.2", wantErr: "from low to high"},
		{in: "127.0.0.1-::1", wantErr: "IPv4"},
		{in: "10.0.0.0-10.1.0.0", wantErr: "at most 65,536"},
		{in: "localhost", wantErr: "not an IP address"},
	} {
		got, err := parseSourceIPs(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: error %v, want one saying %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		var s []string
		for _, ip := range got {
			s = append(s, ip.String())
		}
		if strings.Join(s, " ") != strings.Join(tc.want, " ") {
			t.Errorf("%q: %v, want %v", tc.in, s, tc.want)
		}
	}
}

func TestPercentiles(t *testing.T) {
	var samples []float64
	for i := 100; i >= 1; i-- {
		samples = append(samples, float64(i))
	}
	s := latencyStats(samples, 3, true)
	if s.Count != 100 || s.Missing != 3 || s.P50ms != 50 || s.P90ms != 90 || s.P99ms != 99 || s.Maxms != 100 {
		t.Errorf("stats of 1..100: %+v", s)
	}
	if len(s.SamplesMs) != 100 || s.SamplesMs[0] != 100 {
		t.Errorf("samples not kept in order: %v", s.SamplesMs[:3])
	}
	if s := latencyStats(nil, 2, true); s.Count != 0 || s.P99ms != 0 || s.Missing != 2 {
		t.Errorf("stats of nothing: %+v", s)
	}
	if got := percentile([]float64{7}, 0.99); got != 7 {
		t.Errorf("p99 of one sample: %v", got)
	}
}

func TestEventPayloadIsJSONOfTheSize(t *testing.T) {
	for _, n := range []int{16, 200, 4096} {
		p := eventPayload(n)
		if len(p) != n || !json.Valid(p) {
			t.Errorf("payload of %d: %d bytes, valid JSON %v", n, len(p), json.Valid(p))
		}
	}
}

func TestRatiosAndTable(t *testing.T) {
	r := &Report{Label: "x", Target: "tether", Agents: 10, AgentsConnected: 10, RampSeconds: 2,
		Server:         &ProcStats{RSSPerAgentBytes: 3000, CPUPercent: 10},
		CommandLatency: &LatencyStats{Count: 5, P50ms: 4, P99ms: 8},
		Errors:         map[string]int64{"poll unavailable": 2},
		Baseline: &Report{Target: "baseline", Agents: 10, AgentsConnected: 10, RampSeconds: 1,
			Server:         &ProcStats{RSSPerAgentBytes: 1000, CPUPercent: 0},
			CommandLatency: &LatencyStats{Count: 5, P50ms: 1, P99ms: 2}},
	}
	r.addRatios()
	want := map[string]float64{"server_rss_per_agent": 3, "command_latency_p50": 4, "command_latency_p99": 4, "ramp_seconds": 2}
	for k, v := range want {
		if r.Ratios[k] != v {
			t.Errorf("ratio %s = %v, want %v (all: %v)", k, r.Ratios[k], v, r.Ratios)
		}
	}
	if _, ok := r.Ratios["server_cpu"]; ok {
		t.Error("a ratio to a zero baseline figure")
	}
	var b bytes.Buffer
	if err := writeTable(&b, r); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"baseline", "3.00×", "poll unavailable 2", "8.0 ms"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, b.String())
		}
	}
}

func TestValidateNamesTheFlag(t *testing.T) {
	for _, tc := range []struct {
		change func(*options)
		want   string
	}{
		{func(o *options) { o.token = "" }, "--token"},
		{func(o *options) { o.agents = 0 }, "--agents"},
		{func(o *options) { o.perConn = 500 }, "--agents-per-connection"},
		{func(o *options) { o.output = "yaml" }, "-o"},
		{func(o *options) { o.sourceIPs = "nope" }, "--source-ips"},
		{func(o *options) { o.enrollOnly = true }, "--identities"},
		{func(o *options) { o.eventSize = 1 }, "--event-size"},
	} {
		o := defaultOptions()
		o.token = "t"
		tc.change(&o)
		err := o.validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want one naming %s", err, tc.want)
		}
	}
	o := defaultOptions()
	o.token = "t"
	if err := o.validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

func TestUsageErrorExitCode(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"--agents", "0", "--token", "t"}, &out, &errb); code != exitUsage {
		t.Errorf("exit %d, want %d: %s", code, exitUsage, errb.String())
	}
	if code := run(t.Context(), []string{"extra"}, &out, &errb); code != exitUsage {
		t.Errorf("an argument: exit %d, want %d", code, exitUsage)
	}
	if code := run(t.Context(), []string{"--nope"}, &out, &errb); code != exitUsage {
		t.Errorf("unknown flag: exit %d, want %d", code, exitUsage)
	}
	out.Reset()
	if code := run(t.Context(), []string{"--help"}, &out, &errb); code != exitOK || !strings.Contains(out.String(), "--source-ips") {
		t.Errorf("--help: exit %d\n%s", code, out.String())
	}
}
