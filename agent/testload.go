package agent

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tetherhq/tether/agent/store"
	"github.com/tetherhq/tether/client"
)

// TestLoadEnv names the environment variable that makes the agent generate
// numbered events, for load and crash tests: "N" or "N:RATE" — N events in
// all, RATE per second (default: as fast as the outbox takes them). Event i
// (from 0) has the id "testload-i", module "testload", type "event" and
// the payload {"n": i}. The next number is stored with each append, in the
// same transaction, so a restart, even after a SIGKILL, goes on from there:
// every number is queued exactly once. Unset in normal use; it has no
// other effect.
const TestLoadEnv = "TETHER_AGENT_TEST_LOAD"

const testLoadKey = "testload/next"

// testLoadLoop generates the events TestLoadEnv asks for, if any.
func (rt *agentRun) testLoadLoop(ctx context.Context) error {
	v := os.Getenv(TestLoadEnv)
	if v == "" {
		return nil
	}
	total, perSec, err := parseTestLoad(v)
	if err != nil {
		rt.log.Error("ignoring "+TestLoadEnv, "err", err)
		return nil
	}
	b, err := rt.db.Outbox.Meta(testLoadKey)
	if err != nil {
		return err
	}
	next, _ := strconv.ParseUint(string(b), 10, 64)
	start, from := time.Now(), next
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for next < total {
		n := total - next
		if perSec > 0 {
			due := from + uint64(time.Since(start).Seconds()*perSec)
			n = min(n, due-min(due, next))
		}
		n = min(n, 5000)
		if n == 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
			continue
		}
		now := time.Now().UTC()
		recs := make([]store.Record, n)
		for i := range recs {
			k := next + uint64(i)
			recs[i] = store.Record{Event: client.Event{
				ID: "testload-" + strconv.FormatUint(k, 10), Module: "testload", Type: "event", CollectedAt: now,
				Payload: []byte(`{"n":` + strconv.FormatUint(k, 10) + `}`),
			}}
		}
		if err := rt.db.Outbox.AppendWith(recs, map[string][]byte{testLoadKey: []byte(strconv.FormatUint(next+n, 10))}); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		next += n
	}
	rt.log.Info("test load queued", "events", total)
	return nil
}

func parseTestLoad(v string) (total uint64, perSec float64, err error) {
	n, r, hasRate := strings.Cut(v, ":")
	total, err = strconv.ParseUint(n, 10, 64)
	if err == nil && hasRate {
		perSec, err = strconv.ParseFloat(r, 64)
		if err == nil && perSec <= 0 {
			err = fmt.Errorf("rate %v: want more than 0", perSec)
		}
	}
	if err != nil {
		return 0, 0, fmt.Errorf("%q: want N or N:RATE: %w", v, err)
	}
	return total, perSec, nil
}
