package modules

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tetherhq/tether/agent/store"
)

// The inventory's keys in the outbox's module keys.
const (
	invSentPrefix = "inventory/sent/"  // + document key → digest of what was sent
	invResentKey  = "inventory/resent" // when every document was last sent
)

// InventorySources says where the inventory reads installed packages
// from. A field set to "-" turns that source off.
type InventorySources struct {
	// DpkgStatus is dpkg's database (default /var/lib/dpkg/status); read
	// when it exists.
	DpkgStatus string
	// RPM is the rpm program (default "rpm", looked up in PATH); run when
	// one of RPMDBDirs exists.
	RPM string
	// RPMDBDirs are where an rpm database may be (default /var/lib/rpm and
	// /usr/lib/sysimage/rpm).
	RPMDBDirs []string
}

func (s InventorySources) withDefaults() InventorySources {
	if s.DpkgStatus == "" {
		s.DpkgStatus = "/var/lib/dpkg/status"
	}
	if s.RPM == "" {
		s.RPM = "rpm"
	}
	if s.RPMDBDirs == nil {
		s.RPMDBDirs = []string{"/var/lib/rpm", "/usr/lib/sysimage/rpm"}
	}
	return s
}

// invItem is one inventory document: the host, a network interface or an
// installed package.
type invItem struct {
	Key  string // "host", "interface:eth0", "package:openssl:amd64"
	Type string // "host", "interface", "package"
	Doc  []byte // JSON
}

// hostDoc is the inventory document "host".
type hostDoc struct {
	Hostname     string   `json:"hostname"`
	OS           string   `json:"os"`
	Kernel       string   `json:"kernel,omitempty"`
	Arch         string   `json:"arch"`
	IPs          []string `json:"ips"`
	CPUs         int      `json:"cpus"`
	MemoryBytes  uint64   `json:"memory_bytes,omitempty"`
	AgentVersion string   `json:"agent_version"`
}

// interfaceDoc is an inventory document "interface:NAME".
type interfaceDoc struct {
	Name      string   `json:"name"`
	Index     int      `json:"index"`
	MTU       int      `json:"mtu"`
	MAC       string   `json:"mac,omitempty"`
	Flags     []string `json:"flags"`
	Addresses []string `json:"addresses"`
}

// packageDoc is an inventory document "package:NAME:ARCH".
type packageDoc struct {
	Name          string `json:"name"`
	Version       string `json:"version"`
	Architecture  string `json:"architecture,omitempty"`
	Format        string `json:"format"` // deb or rpm
	Source        string `json:"source,omitempty"`
	Section       string `json:"section,omitempty"`
	InstalledSize uint64 `json:"installed_size,omitempty"` // bytes
	Summary       string `json:"summary,omitempty"`
}

func (m *Manager) runInventory(ctx context.Context, cfg InventoryConfig) {
	inv := &inventory{m: m, cfg: cfg}
	for {
		if err := inv.once(ctx); err != nil && ctx.Err() == nil {
			m.log.Error("inventory failed", "err", err)
		}
		if !sleep(ctx, cfg.Interval) {
			return
		}
	}
}

type inventory struct {
	m      *Manager
	cfg    InventoryConfig
	sent   map[string]string // key → digest, as on disk
	resent time.Time
}

// once collects the inventory and queues what changed since it was last
// sent: upserts of new and changed documents, deletes of those gone.
// Every ResendEvery, every document is sent again.
func (inv *inventory) once(ctx context.Context) error {
	if inv.sent == nil {
		kv, err := inv.m.opts.Outbox.MetaPrefix("inventory/")
		if err != nil {
			return err
		}
		inv.sent = map[string]string{}
		for k, v := range kv {
			if key, ok := strings.CutPrefix(k, invSentPrefix); ok {
				inv.sent[key] = string(v)
			} else if k == invResentKey {
				inv.resent, _ = time.Parse(time.RFC3339, string(v))
			}
		}
	}
	items, errs := collectInventory(ctx, inv.m.opts.Inventory, inv.m.opts.Version)
	for _, err := range errs {
		inv.m.log.Warn("inventory: a source failed; its documents are kept as they were", "err", err)
	}
	all := time.Since(inv.resent) >= inv.cfg.ResendEvery
	changes, next := diffInventory(inv.sent, items, all, len(errs) > 0)
	meta := map[string][]byte{}
	for k, d := range next {
		if inv.sent[k] != d {
			meta[invSentPrefix+k] = []byte(d)
		}
	}
	for k := range inv.sent {
		if _, ok := next[k]; !ok {
			meta[invSentPrefix+k] = nil
		}
	}
	now := time.Now().UTC()
	if all {
		meta[invResentKey] = []byte(now.Format(time.RFC3339))
	}
	if err := inv.m.opts.Outbox.AppendWith(changes, meta); err != nil {
		return err
	}
	inv.sent = next
	if all {
		inv.resent = now
	}
	inv.m.setStatus("inventory", map[string]any{"documents": len(next), "last_changes": len(changes), "last_run": now})
	if len(changes) > 0 {
		inv.m.log.Debug("inventory changes queued", "changes", len(changes), "documents", len(next))
	}
	return nil
}

// diffInventory compares the documents collected with the digests of those
// sent and returns the state changes to send (the host first, then by key)
// and the digests after them. With all, every document is sent. With
// partial (a source failed), nothing is deleted.
func diffInventory(sent map[string]string, items []invItem, all, partial bool) ([]store.Record, map[string]string) {
	next := make(map[string]string, len(items))
	var recs []store.Record
	slices.SortFunc(items, func(a, b invItem) int {
		switch {
		case a.Key == b.Key:
			return 0
		case a.Key == "host":
			return -1
		case b.Key == "host":
			return 1
		}
		return strings.Compare(a.Key, b.Key)
	})
	for _, it := range items {
		sum := sha256.Sum256(it.Doc)
		d := hex.EncodeToString(sum[:16])
		if _, dup := next[it.Key]; dup {
			continue
		}
		next[it.Key] = d
		if all || sent[it.Key] != d {
			recs = append(recs, store.Record{Stateful: true, Key: it.Key, Event: newEvent("inventory", it.Type, it.Doc)})
		}
	}
	var gone []string
	for k, d := range sent {
		if _, ok := next[k]; ok {
			continue
		}
		if partial && k != "host" {
			next[k] = d // its source failed: it may still be there
			continue
		}
		gone = append(gone, k)
	}
	slices.Sort(gone)
	for _, k := range gone {
		typ, _, _ := strings.Cut(k, ":")
		recs = append(recs, store.Record{Stateful: true, Key: k, Delete: true, Event: newEvent("inventory", typ, nil)})
	}
	return recs, next
}

// collectInventory reads the host, its interfaces and its packages. The
// errors are those of sources that failed.
func collectInventory(ctx context.Context, src InventorySources, version string) ([]invItem, []error) {
	var errs []error
	items := []invItem{{Key: "host", Type: "host", Doc: mustJSON(collectHost(version))}}
	ifaces, err := collectInterfaces()
	if err != nil {
		errs = append(errs, fmt.Errorf("network interfaces: %w", err))
	}
	items = append(items, ifaces...)
	if src.DpkgStatus != "-" {
		pkgs, err := readDpkgStatus(src.DpkgStatus)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("dpkg database: %w", err))
		}
		items = append(items, pkgs...)
	}
	if src.RPM != "-" && slices.ContainsFunc(src.RPMDBDirs, func(d string) bool { _, err := os.Stat(d); return err == nil }) {
		pkgs, err := readRPM(ctx, src.RPM)
		if err != nil {
			errs = append(errs, fmt.Errorf("rpm database: %w", err))
		}
		items = append(items, pkgs...)
	}
	return items, errs
}

func collectHost(version string) hostDoc {
	host, _ := os.Hostname()
	h := hostDoc{Hostname: host, OS: OSDescription(), Arch: runtime.GOARCH, IPs: []string{}, CPUs: runtime.NumCPU(), AgentVersion: version}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.Kernel = strings.TrimSpace(string(b))
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() {
				h.IPs = append(h.IPs, ipn.IP.String())
			}
		}
	}
	slices.Sort(h.IPs)
	h.MemoryBytes = memTotal()
	return h
}

// OSDescription is runtime.GOOS plus the distribution's PRETTY_NAME, for
// example "linux (Debian GNU/Linux 12 (bookworm))": the host's os, in the
// inventory and at enrollment.
func OSDescription() string {
	for _, path := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok && strings.Trim(v, `"'`) != "" {
				return runtime.GOOS + " (" + strings.Trim(v, `"'`) + ")"
			}
		}
		break
	}
	return runtime.GOOS
}

// memTotal reads MemTotal from /proc/meminfo, in bytes.
func memTotal() uint64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func collectInterfaces() ([]invItem, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	var out []invItem
	for _, i := range ifs {
		d := interfaceDoc{Name: i.Name, Index: i.Index, MTU: i.MTU, MAC: i.HardwareAddr.String(), Flags: []string{}, Addresses: []string{}}
		if i.Flags != 0 {
			d.Flags = strings.Split(i.Flags.String(), "|")
		}
		if addrs, err := i.Addrs(); err == nil {
			for _, a := range addrs {
				d.Addresses = append(d.Addresses, a.String())
			}
		}
		slices.Sort(d.Addresses)
		out = append(out, invItem{Key: "interface:" + i.Name, Type: "interface", Doc: mustJSON(d)})
	}
	return out, nil
}

// readDpkgStatus reads the installed packages of a dpkg status file.
func readDpkgStatus(path string) ([]invItem, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseDpkgStatus(f)
}

// parseDpkgStatus parses dpkg's status file format: paragraphs of
// "Field: value" lines separated by blank lines, continuation lines
// starting with a space. Only packages whose status ends in "installed"
// are kept.
func parseDpkgStatus(r io.Reader) ([]invItem, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	var out []invItem
	fields := map[string]string{}
	last := ""
	flush := func() {
		defer clear(fields)
		name := fields["Package"]
		st := strings.Fields(fields["Status"])
		if name == "" || len(st) == 0 || st[len(st)-1] != "installed" {
			return
		}
		p := packageDoc{Name: name, Version: fields["Version"], Architecture: fields["Architecture"], Format: "deb",
			Source: fields["Source"], Section: fields["Section"]}
		if kb, err := strconv.ParseUint(fields["Installed-Size"], 10, 64); err == nil {
			p.InstalledSize = kb * 1024
		}
		p.Summary, _, _ = strings.Cut(fields["Description"], "\n")
		out = append(out, invItem{Key: packageKey(p), Type: "package", Doc: mustJSON(p)})
	}
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
			flush()
			last = ""
		case line[0] == ' ' || line[0] == '\t':
			if last != "" {
				fields[last] += "\n" + strings.TrimSpace(line)
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			last = k
			fields[k] = strings.TrimSpace(v)
		}
	}
	flush()
	return out, sc.Err()
}

func packageKey(p packageDoc) string {
	if p.Architecture == "" {
		return "package:" + p.Name
	}
	return "package:" + p.Name + ":" + p.Architecture
}

// readRPM lists the installed packages with the rpm program.
func readRPM(ctx context.Context, rpm string) ([]invItem, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, rpm, "-qa", "--queryformat", `%{NAME}\t%{EPOCH}\t%{VERSION}-%{RELEASE}\t%{ARCH}\t%{SIZE}\t%{SOURCERPM}\t%{GROUP}\t%{SUMMARY}\n`)
	out, err := cmd.Output()
	if err != nil {
		return nil, err
	}
	return parseRPMList(string(out)), nil
}

// parseRPMList parses the lines readRPM's query format prints.
func parseRPMList(out string) []invItem {
	var items []invItem
	for line := range strings.SplitSeq(out, "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 8 || f[0] == "" {
			continue
		}
		none := func(s string) string {
			if s == "(none)" {
				return ""
			}
			return s
		}
		p := packageDoc{Name: f[0], Version: f[2], Architecture: none(f[3]), Format: "rpm", Source: none(f[5]), Section: none(f[6]), Summary: f[7]}
		if e := none(f[1]); e != "" {
			p.Version = e + ":" + p.Version
		}
		p.InstalledSize, _ = strconv.ParseUint(f[4], 10, 64)
		items = append(items, invItem{Key: packageKey(p), Type: "package", Doc: mustJSON(p)})
	}
	return items
}
