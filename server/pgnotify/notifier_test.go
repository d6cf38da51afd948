package pgnotify_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tetherhq/tether/server/pgnotify"
	"github.com/tetherhq/tether/server/postgres/pgtest"
)

// testURL returns the URL of the test server (see pgtest: outside CI, a
// server that cannot be reached skips the test).
func testURL(t testing.TB) string { return pgtest.ServerURL(t) }

// channel returns a channel name of the test's own, so that tests running
// at once on the same database (other packages' too) do not hear each other.
func channel() string {
	return "tether_test_" + strings.ToLower(rand.Text()[:10])
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func open(t testing.TB, url, ch string, set func(*pgnotify.Options)) *pgnotify.Notifier {
	t.Helper()
	o := pgnotify.Options{Channel: ch, Log: quiet, MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}
	if set != nil {
		set(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := pgnotify.New(ctx, url, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func pair(t testing.TB, set func(*pgnotify.Options)) (a, b *pgnotify.Notifier) {
	url, ch := testURL(t), channel()
	return open(t, url, ch, set), open(t, url, ch, set)
}

func awaitWake(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not woken within 10 s", what)
	}
}

func woken(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// terminate ends the backend of the notifier's connection in role
// ("tether-listen" or "tether-notify") and returns how many it ended.
func terminate(t testing.TB, url string, n *pgnotify.Notifier, role string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var ended int
	err = conn.QueryRow(ctx, `SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE application_name = $1) t`, role+" "+n.Node()).Scan(&ended)
	if err != nil {
		t.Fatal(err)
	}
	return ended
}

func TestNotifyWakesSubscriberOnOtherNode(t *testing.T) {
	a, b := pair(t, nil)
	x, y := uuid.NewString(), uuid.NewString()
	onA, releaseA := a.Subscribe(x)
	defer releaseA()
	onB, releaseB := b.Subscribe(x)
	defer releaseB()
	otherOnB, releaseOther := b.Subscribe(y)
	defer releaseOther()

	a.Notify(x)
	if !woken(onA) {
		t.Fatal("the sending node's own subscriber was not woken at once")
	}
	awaitWake(t, onB, "subscriber on the other node")
	if woken(otherOnB) {
		t.Fatal("a subscriber of another agent was woken")
	}
}

func TestNotifyManyAgentsAcrossPayloads(t *testing.T) {
	a, b := pair(t, nil)
	// 2,000 ids of 36 bytes: about ten payloads of under 8,000 bytes.
	ids := make([]string, 2000)
	subs := make([]<-chan struct{}, len(ids))
	for i := range ids {
		ids[i] = uuid.NewString()
		ch, release := b.Subscribe(ids[i])
		defer release()
		subs[i] = ch
	}
	a.Notify(ids[:1500]...)
	a.Notify(ids[1500:]...)
	for i, ch := range subs {
		awaitWake(t, ch, fmt.Sprintf("subscriber %d of %d", i, len(ids)))
	}
}

// caches records what a notifier asked to drop.
type caches struct {
	mu      sync.Mutex
	agents  []string
	configs int
	all     int
}

func (c *caches) DropAgent(id string) { c.mu.Lock(); c.agents = append(c.agents, id); c.mu.Unlock() }
func (c *caches) DropConfigs()        { c.mu.Lock(); c.configs++; c.mu.Unlock() }
func (c *caches) DropAll()            { c.mu.Lock(); c.all++; c.mu.Unlock() }

func (c *caches) get() (agents []string, configs, all int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.agents), c.configs, c.all
}

func TestChangesReachOtherNodesBeforeWakeUps(t *testing.T) {
	a, b := pair(t, nil)
	var onA, onB caches
	a.SetCaches(&onA)
	b.SetCaches(&onB)
	x := uuid.NewString()
	wake, release := b.Subscribe(x)
	defer release()

	// What the comms API does after deleting an agent or changing a
	// group's configuration: tell, then wake.
	a.AgentChanged(x)
	a.ConfigChanged()
	a.Notify(x)
	awaitWake(t, wake, "subscriber on the other node")
	agents, configs, all := onB.get()
	if !slices.Equal(agents, []string{x}) || configs != 1 || all != 0 {
		t.Fatalf("when woken, the other node had dropped agents %v, configurations %d times, all %d times; want [%s], 1, 0", agents, configs, all, x)
	}

	// A node ignores its own messages: once it hears the other node's
	// next message, it has heard its own earlier ones, and dropped nothing.
	y := uuid.NewString()
	wakeA, releaseA := a.Subscribe(y)
	defer releaseA()
	b.Notify(y)
	awaitWake(t, wakeA, "subscriber on the first node")
	if agents, configs, all := onA.get(); len(agents) != 0 || configs != 0 || all != 0 {
		t.Fatalf("the sending node acted on its own messages: dropped %v, %d, %d", agents, configs, all)
	}
}

func TestListenerReconnectsAndWakesEveryPoll(t *testing.T) {
	url, ch := testURL(t), channel()
	a, b := open(t, url, ch, nil), open(t, url, ch, nil)
	var dropped caches
	b.SetCaches(&dropped)
	var subs []<-chan struct{}
	for range 3 {
		ch, release := b.Subscribe(uuid.NewString())
		defer release()
		subs = append(subs, ch)
	}

	if got := terminate(t, url, b, "tether-listen"); got != 1 {
		t.Fatalf("ended %d listening connections, want 1", got)
	}
	// Every waiting poll is woken once the connection is back: each looks
	// at the store again, for what it may have missed.
	for i, ch := range subs {
		awaitWake(t, ch, fmt.Sprintf("poll %d after the reconnection", i))
	}
	if !b.Listening() || b.Reconnects() != 1 {
		t.Fatalf("Listening() = %v, Reconnects() = %d; want true, 1", b.Listening(), b.Reconnects())
	}
	if _, _, all := dropped.get(); all != 1 {
		t.Fatalf("caches dropped %d times at the reconnection, want 1", all)
	}
	// And it listens again.
	x := uuid.NewString()
	wake, release := b.Subscribe(x)
	defer release()
	a.Notify(x)
	awaitWake(t, wake, "subscriber after the reconnection")
}

func TestSenderReconnects(t *testing.T) {
	url, ch := testURL(t), channel()
	a, b := open(t, url, ch, nil), open(t, url, ch, nil)
	x := uuid.NewString()
	wake, release := b.Subscribe(x)
	defer release()
	a.Notify(x)
	awaitWake(t, wake, "first wake-up")

	if got := terminate(t, url, a, "tether-notify"); got != 1 {
		t.Fatalf("ended %d sending connections, want 1", got)
	}
	a.Notify(x)
	awaitWake(t, wake, "wake-up after the sending connection was ended")
}

func TestIdleListenerIsPinged(t *testing.T) {
	a, b := pair(t, func(o *pgnotify.Options) { o.PingInterval = 5 * time.Millisecond })
	// Let the listeners go through many ping cycles (a wait for
	// notifications cut short, then a ping), then check they still hear.
	time.Sleep(100 * time.Millisecond)
	x := uuid.NewString()
	wake, release := b.Subscribe(x)
	defer release()
	a.Notify(x)
	awaitWake(t, wake, "subscriber after ping cycles")
	if b.Reconnects() != 0 {
		t.Fatalf("the listener reconnected %d times: the pings broke it", b.Reconnects())
	}
}

func TestCloseSendsWhatIsPending(t *testing.T) {
	a, b := pair(t, nil)
	x := uuid.NewString()
	wake, release := b.Subscribe(x)
	defer release()
	a.Notify(x)
	a.Close()
	awaitWake(t, wake, "wake-up sent just before Close")
}

func TestTooManyPendingWakesEveryPoll(t *testing.T) {
	url, ch := testURL(t), channel()
	a := open(t, url, ch, func(o *pgnotify.Options) { o.MaxPending = 10 })
	b := open(t, url, ch, nil)
	var dropped caches
	b.SetCaches(&dropped)
	other, release := b.Subscribe(uuid.NewString())
	defer release()
	ids := make([]string, 11)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	a.Notify(ids...)
	// Past MaxPending ids, one message wakes every poll of every node.
	awaitWake(t, other, "a subscriber of an agent that was not named")
	if _, _, all := dropped.get(); all != 1 {
		t.Fatalf("caches dropped %d times, want 1", all)
	}
}

func TestUnreadableMessageWakesEveryPoll(t *testing.T) {
	url, ch := testURL(t), channel()
	b := open(t, url, ch, nil)
	var dropped caches
	b.SetCaches(&dropped)
	wake, release := b.Subscribe(uuid.NewString())
	defer release()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// A node of a later version, sending a message this one cannot read.
	if _, err := conn.Exec(ctx, "SELECT pg_notify($1, $2)", ch, "tether2 abcdefgh wake-shard 7"); err != nil {
		t.Fatal(err)
	}
	awaitWake(t, wake, "subscriber after an unreadable message")
	if _, _, all := dropped.get(); all != 1 {
		t.Fatalf("caches dropped %d times, want 1", all)
	}
}

func TestOptionsChecked(t *testing.T) {
	for _, ch := range []string{"Tether", "1abc", "a-b", "a b", string(make([]byte, 64))} {
		if _, err := pgnotify.New(context.Background(), pgtest.DefaultURL, pgnotify.Options{Channel: ch}); err == nil {
			t.Errorf("channel %q accepted", ch)
		}
	}
}

// TestCrossNodeLatency measures how long a wake-up takes from Notify on
// one node to the subscriber on another, and logs the distribution (run
// with -v). It asserts nothing about time.
func TestCrossNodeLatency(t *testing.T) {
	a, b := pair(t, nil)
	const n = 300
	d := make([]time.Duration, 0, n)
	x := uuid.NewString()
	wake, release := b.Subscribe(x)
	defer release()
	for range n {
		start := time.Now()
		a.Notify(x)
		awaitWake(t, wake, "subscriber")
		d = append(d, time.Since(start))
	}
	slices.Sort(d)
	t.Logf("cross-node wake-up over %d notifications: p50 %v, p90 %v, p99 %v, max %v",
		n, d[n/2], d[n*90/100], d[n*99/100], d[n-1])
}

// BenchmarkCrossNodeWake reports the latency of a wake-up from Notify on
// one node to a subscriber on another, as p50 and p99 metrics.
func BenchmarkCrossNodeWake(b *testing.B) {
	na, nb := pair(b, nil)
	x := uuid.NewString()
	wake, release := nb.Subscribe(x)
	defer release()
	d := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		na.Notify(x)
		awaitWake(b, wake, "subscriber")
		d = append(d, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(d)
	b.ReportMetric(float64(d[len(d)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(d[len(d)*99/100].Microseconds()), "p99-µs")
}
