package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// parseSourceIPs reads --source-ips: empty, a range of IPv4 addresses
// "127.0.0.2-127.0.0.50", or a comma-separated list.
func parseSourceIPs(s string) ([]net.IP, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	if from, to, ok := strings.Cut(s, "-"); ok && !strings.Contains(s, ",") {
		a, b := net.ParseIP(strings.TrimSpace(from)).To4(), net.ParseIP(strings.TrimSpace(to)).To4()
		if a == nil || b == nil {
			return nil, fmt.Errorf("%q: want a range of IPv4 addresses such as 127.0.0.2-127.0.0.50", s)
		}
		lo, hi := binary.BigEndian.Uint32(a), binary.BigEndian.Uint32(b)
		if hi < lo || hi-lo >= 1<<16 {
			return nil, fmt.Errorf("%q: want a range from low to high, at most 65,536 addresses", s)
		}
		ips := make([]net.IP, 0, hi-lo+1)
		for v := lo; v <= hi; v++ {
			ip := make(net.IP, 4)
			binary.BigEndian.PutUint32(ip, v)
			ips = append(ips, ip)
		}
		return ips, nil
	}
	var ips []net.IP
	for _, part := range strings.Split(s, ",") {
		ip := net.ParseIP(strings.TrimSpace(part))
		if ip == nil {
			return nil, fmt.Errorf("%q is not an IP address", part)
		}
		ips = append(ips, ip)
	}
	return ips, nil
}

// Machine describes where a run happened.
type Machine struct {
	CPUs          int    `json:"cpus"`
	CPUModel      string `json:"cpu_model,omitempty"`
	MemTotalBytes int64  `json:"mem_total_bytes,omitempty"`
	Kernel        string `json:"kernel,omitempty"`
	Go            string `json:"go"`
	OpenFileLimit int64  `json:"open_file_limit,omitempty"`
}

func machineFacts() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		m.MemTotalBytes = kbField(b, "MemTotal:")
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.OpenFileLimit = openFileLimit()
	return m
}

// kbField returns the value of a "Name:   123 kB" line, in bytes.
func kbField(b []byte, name string) int64 {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, name); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				v, _ := strconv.ParseInt(f[0], 10, 64)
				return v << 10
			}
		}
	}
	return 0
}

// procSample is a process's memory and CPU time at one moment.
type procSample struct {
	rss     int64
	cpuTick int64 // user + system, in clock ticks
}

// clockTicks is USER_HZ, 100 on every Linux that Go supports.
const clockTicks = 100

func readProc(pid int) (procSample, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procSample{}, err
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procSample{}, err
	}
	// Fields after the command name, which is in parentheses and may
	// hold spaces: utime and stime are the 14th and 15th fields overall.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return procSample{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return procSample{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return procSample{rss: kbField(status, "VmRSS:"), cpuTick: ut + st}, nil
}
