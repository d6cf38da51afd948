package agent

import (
	"bufio"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// hostInventory is the payload of the stateful inventory event "host".
type hostInventory struct {
	Hostname     string   `json:"hostname"`
	OS           string   `json:"os"`
	Kernel       string   `json:"kernel,omitempty"`
	Arch         string   `json:"arch"`
	IPs          []string `json:"ips"`
	CPUs         int      `json:"cpus"`
	MemoryBytes  uint64   `json:"memory_bytes,omitempty"`
	AgentVersion string   `json:"agent_version"`
}

func collectInventory(version string) hostInventory {
	host, _ := os.Hostname()
	inv := hostInventory{
		Hostname:     host,
		OS:           osDescription(),
		Arch:         runtime.GOARCH,
		IPs:          []string{},
		CPUs:         runtime.NumCPU(),
		AgentVersion: version,
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		inv.Kernel = strings.TrimSpace(string(b))
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() {
				inv.IPs = append(inv.IPs, ipn.IP.String())
			}
		}
	}
	inv.MemoryBytes = memTotal()
	return inv
}

// memTotal reads MemTotal from /proc/meminfo, in bytes.
func memTotal() uint64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, err := strconv.ParseUint(fields[1], 10, 64)
			if err != nil {
				return 0
			}
			return kb * 1024
		}
	}
	return 0
}
