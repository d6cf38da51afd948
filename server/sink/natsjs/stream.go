package natsjs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamConfig returns the configuration of the stream Open creates when it
// does not exist.
func StreamConfig(o Options) jetstream.StreamConfig {
	o.setDefaults()
	return streamConfig(&o)
}

func streamConfig(o *Options) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        o.Stream,
		Description: "Events accepted by Tether servers, one message per event",
		Subjects:    []string{o.SubjectPrefix + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      o.MaxAge,
		MaxBytes:    maxBytes(o.MaxBytes),
		MaxMsgs:     -1,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
		Duplicates:  o.DedupWindow,
	}
}

func maxBytes(n int64) int64 {
	if n == 0 {
		return -1
	}
	return n
}

// ensureStream creates the stream when it does not exist, checks that it
// takes the sink's subjects, and returns its duplicate window.
func (s *Sink) ensureStream(ctx context.Context) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, max(s.o.PublishTimeout, 10*time.Second))
	defer cancel()
	stream, err := s.js.Stream(ctx, s.o.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		stream, err = s.js.CreateStream(ctx, streamConfig(&s.o))
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			stream, err = s.js.Stream(ctx, s.o.Stream) // another node created it first
		} else if err == nil {
			s.o.Log.Info("nats sink: created the stream", "stream", s.o.Stream,
				"subjects", s.o.SubjectPrefix+".>", "dedup_window", s.o.DedupWindow,
				"max_age", s.o.MaxAge, "max_bytes", s.o.MaxBytes, "replicas", s.o.Replicas)
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return 0, fmt.Errorf("stream %s: no answer from JetStream: is it enabled for this account, and may this user publish to $JS.API.STREAM.INFO.%s (and .CREATE.%s)? %w",
			s.o.Stream, s.o.Stream, s.o.Stream, err)
	}
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", s.o.Stream, err)
	}
	cfg := stream.CachedInfo().Config
	if !takesPrefix(cfg.Subjects, s.o.SubjectPrefix) {
		return 0, fmt.Errorf("stream %s takes the subjects %s, not every subject %s.<module>: add %s.> to them, or choose another stream or subject prefix",
			s.o.Stream, strings.Join(cfg.Subjects, ", "), s.o.SubjectPrefix, s.o.SubjectPrefix)
	}
	if cfg.Duplicates < s.o.DedupWindow {
		s.o.Log.Warn("nats sink: the stream's duplicate window is shorter than configured; a retry after it stores events again",
			"stream", s.o.Stream, "duplicate_window", cfg.Duplicates, "configured", s.o.DedupWindow)
	}
	s.o.Log.Info("nats sink: publishing events", "stream", s.o.Stream, "subjects", s.o.SubjectPrefix+".<module>",
		"duplicate_window", cfg.Duplicates, "server", s.nc.ConnectedUrlRedacted())
	return cfg.Duplicates, nil
}

// takesPrefix reports whether one of the subject filters matches every
// subject "<prefix>.<token>".
func takesPrefix(filters []string, prefix string) bool {
	want := strings.Split(prefix, ".")
	for _, f := range filters {
		if covers(strings.Split(f, "."), want) {
			return true
		}
	}
	return false
}

func covers(filter, prefix []string) bool {
	for i, tok := range filter {
		switch {
		case tok == ">":
			return true
		case i == len(prefix):
			// The module token: only a wildcard takes them all.
			return tok == "*" && i == len(filter)-1
		case tok != "*" && tok != prefix[i]:
			return false
		}
	}
	return false
}
