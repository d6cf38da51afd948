package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"time"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/sink/natsjs"
)

// NATSConfig configures the NATS JetStream event sink (events.nats). It is
// on when URLs is set.
type NATSConfig struct {
	// URLs are the NATS servers; the node connects to one of them.
	URLs []string `yaml:"urls"`
	// Stream is the JetStream stream, created when missing; events go to
	// the subjects "<subject_prefix>.<module>".
	Stream        string `yaml:"stream"`
	SubjectPrefix string `yaml:"subject_prefix"`
	// PublishTimeout bounds the wait for a batch's acknowledgements.
	PublishTimeout Duration `yaml:"publish_timeout"`
	// DedupWindow, Replicas, MaxAge (0: no age limit) and MaxBytes (0: no
	// size limit) configure the stream when the node creates it.
	DedupWindow Duration `yaml:"dedup_window"`
	Replicas    int      `yaml:"replicas"`
	MaxAge      Duration `yaml:"max_age"`
	MaxBytes    int64    `yaml:"max_bytes"`
	// CAFile verifies the NATS servers (default: the system's CAs);
	// CertFile and KeyFile are a client certificate.
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// One way to authenticate at most: a credentials file, a user and
	// password, or a token.
	CredsFile string `yaml:"creds_file"`
	User      string `yaml:"user"`
	Password  string `yaml:"password"`
	Token     string `yaml:"token"`
}

func defaultNATSConfig() NATSConfig {
	return NATSConfig{
		Stream: natsjs.DefaultStream, SubjectPrefix: natsjs.DefaultSubjectPrefix,
		PublishTimeout: Duration(natsjs.DefaultPublishTimeout), DedupWindow: Duration(natsjs.DefaultDedupWindow),
		Replicas: natsjs.DefaultReplicas, MaxAge: Duration(natsjs.DefaultMaxAge),
	}
}

func (c NATSConfig) enabled() bool { return len(c.URLs) > 0 }

var (
	streamNameRE    = regexp.MustCompile(`^[A-Za-z0-9_-]{1,255}$`)
	subjectPrefixRE = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)
)

// validateSinks checks the keys that choose the event sinks, and names
// the key at fault.
func (c *EventsConfig) validateSinks() error {
	n := c.NATS
	if !c.Files && !n.enabled() {
		return errors.New("events.files: false needs events.nats.urls: events must go to at least one sink")
	}
	if !n.enabled() {
		return nil
	}
	for _, u := range n.URLs {
		p, err := url.Parse(u)
		if err != nil || p.Host == "" || (p.Scheme != "nats" && p.Scheme != "tls" && p.Scheme != "ws" && p.Scheme != "wss") {
			return fmt.Errorf("events.nats.urls: %q is not a NATS URL (nats://HOST:PORT, tls://, ws://, wss://)", u)
		}
	}
	switch {
	case !streamNameRE.MatchString(n.Stream):
		return fmt.Errorf("events.nats.stream: %q: want 1 to 255 of A-Z a-z 0-9 '_' '-'", n.Stream)
	case !subjectPrefixRE.MatchString(n.SubjectPrefix):
		return fmt.Errorf("events.nats.subject_prefix: %q: want tokens of A-Z a-z 0-9 '_' '-' separated by '.' (example: tether.events)", n.SubjectPrefix)
	case n.PublishTimeout < Duration(100*time.Millisecond) || n.PublishTimeout > Duration(5*time.Minute):
		return errors.New("events.nats.publish_timeout: between 100ms and 5m")
	case n.DedupWindow < Duration(time.Second) || n.DedupWindow > Duration(24*time.Hour):
		return errors.New("events.nats.dedup_window: between 1s and 24h")
	case n.Replicas < 1 || n.Replicas > 5:
		return errors.New("events.nats.replicas: 1 to 5")
	case n.MaxAge < 0 || (n.MaxAge > 0 && n.MaxAge < n.DedupWindow):
		return fmt.Errorf("events.nats.max_age: 0 (no age limit) or at least events.nats.dedup_window (%s)", time.Duration(n.DedupWindow))
	case n.MaxBytes < 0:
		return errors.New("events.nats.max_bytes: 0 (no limit) or more")
	case (n.CertFile == "") != (n.KeyFile == ""):
		return errors.New("events.nats.cert_file, events.nats.key_file: set both or neither")
	case n.Password != "" && n.User == "":
		return errors.New("events.nats.password: needs events.nats.user")
	}
	auths := 0
	for _, set := range []bool{n.CredsFile != "", n.User != "", n.Token != ""} {
		if set {
			auths++
		}
	}
	if auths > 1 {
		return errors.New("events.nats.creds_file, events.nats.user, events.nats.token: set one of them at most")
	}
	return nil
}

// options returns the options of the NATS sink.
func (c NATSConfig) options(log *slog.Logger) natsjs.Options {
	maxAge := time.Duration(c.MaxAge)
	if maxAge == 0 {
		maxAge = -1 // no age limit
	}
	return natsjs.Options{
		URLs: c.URLs, Stream: c.Stream, SubjectPrefix: c.SubjectPrefix,
		PublishTimeout: time.Duration(c.PublishTimeout), DedupWindow: time.Duration(c.DedupWindow),
		Replicas: c.Replicas, MaxAge: maxAge, MaxBytes: c.MaxBytes,
		CAFile: c.CAFile, CertFile: c.CertFile, KeyFile: c.KeyFile,
		CredsFile: c.CredsFile, User: c.User, Password: c.Password, Token: c.Token,
		Log: log,
	}
}

// openNATS opens the NATS sink when events.nats is configured.
func (n *Node) openNATS(ctx context.Context) error {
	if !n.cfg.Events.NATS.enabled() {
		return nil
	}
	s, err := natsjs.Open(ctx, n.cfg.Events.NATS.options(n.log.With("component", "event-nats")))
	if err != nil {
		return fmt.Errorf("events.nats: %w", err)
	}
	n.nats = s
	return nil
}

// eventSinks returns the sinks that keep accepted events: the event files
// and NATS JetStream, those that are on.
func (n *Node) eventSinks() []tether.Sink {
	var sinks []tether.Sink
	if n.sink != nil {
		sinks = append(sinks, n.sink)
	}
	if n.nats != nil {
		sinks = append(sinks, n.nats)
	}
	return sinks
}
