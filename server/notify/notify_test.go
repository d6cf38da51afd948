package notify_test

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/tetherhq/tether/server/notify"
)

func TestHubWakesOnlyItsAgent(t *testing.T) {
	h := notify.NewHub()
	a, releaseA := h.Subscribe("a")
	b, releaseB := h.Subscribe("b")
	defer releaseB()
	h.Notify("a")
	h.Notify("a") // coalesces, must not block
	select {
	case <-a:
	case <-time.After(time.Second):
		t.Fatal("subscriber of a not woken")
	}
	select {
	case <-b:
		t.Fatal("subscriber of b woken by a notification for a")
	default:
	}
	if got := h.Waiting(); got != 2 {
		t.Fatalf("Waiting() = %d, want 2", got)
	}
	releaseA()
	if got := h.Waiting(); got != 1 {
		t.Fatalf("after release Waiting() = %d, want 1", got)
	}
}

func TestHubNotifyAllWakesEverySubscriber(t *testing.T) {
	h := notify.NewHub()
	var chans []<-chan struct{}
	for _, id := range []string{"a", "a", "b", "c"} {
		ch, release := h.Subscribe(id)
		defer release()
		chans = append(chans, ch)
	}
	h.NotifyAll()
	h.NotifyAll() // coalesces, must not block
	for i, ch := range chans {
		select {
		case <-ch:
		default:
			t.Fatalf("subscriber %d not woken", i)
		}
	}
}

func TestHubReleasesAnySubscriptionOfAnAgent(t *testing.T) {
	h := notify.NewHub()
	var chans []<-chan struct{}
	var releases []func()
	for range 3 {
		ch, release := h.Subscribe("a")
		chans, releases = append(chans, ch), append(releases, release)
	}
	releases[1]() // the middle one
	releases[1]() // twice: no effect
	if got := h.Waiting(); got != 2 {
		t.Fatalf("Waiting() = %d, want 2", got)
	}
	h.Notify("a")
	for i, ch := range chans {
		select {
		case <-ch:
			if i == 1 {
				t.Fatal("a released subscription was woken")
			}
		default:
			if i != 1 {
				t.Fatalf("subscriber %d not woken", i)
			}
		}
	}
	releases[2]() // the newest, first in the list
	releases[0]()
	if got := h.Waiting(); got != 0 {
		t.Fatalf("Waiting() = %d after every release, want 0", got)
	}
	h.Notify("a") // nothing left to wake
}

func BenchmarkHubSubscription(b *testing.B) {
	h := notify.NewHub()
	ids := make([]string, b.N)
	for i := range ids {
		ids[i] = fmt.Sprintf("agent-%08d", i)
	}
	releases := make([]func(), b.N)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for i, id := range ids {
		_, releases[i] = h.Subscribe(id)
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric((float64(after.HeapAlloc)-float64(before.HeapAlloc))/float64(b.N), "B/subscription")
	for _, r := range releases {
		r()
	}
}

func TestNotifiedSince(t *testing.T) {
	h := notify.NewHub()
	g0 := h.Generation()
	if h.NotifiedSince("a", g0) {
		t.Fatal("notified before any notification")
	}
	h.Notify("a")
	g1 := h.Generation()
	if !h.NotifiedSince("a", g0) || h.NotifiedSince("a", g1) || h.NotifiedSince("b", g0) {
		t.Fatal("Notify(a): want a notified since g0 only, b never")
	}
	h.Notify("b")
	if h.NotifiedSince("a", g1) || !h.NotifiedSince("b", g1) {
		t.Fatal("Notify(b) changed a, or not b")
	}
	g2 := h.Generation()
	h.NotifyAll()
	if !h.NotifiedSince("a", g2) || !h.NotifiedSince("never-seen", g2) {
		t.Fatal("NotifyAll: want every agent notified")
	}
	if h.NotifiedSince("a", h.Generation()) {
		t.Fatal("notified after the latest generation")
	}
}
