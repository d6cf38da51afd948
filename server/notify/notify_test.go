package notify_test

import (
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
