package comms_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"

	commsv1 "github.com/tetherhq/tether/gen/tether/comms/v1"
	"github.com/tetherhq/tether/server/ingest"
)

// BenchmarkIngest measures event ingest on one node through the real
// handler: agents push batches of 1,000 events of about 200 payload bytes,
// zstd-compressed, with the Connect protocol over HTTP/2 and TLS on
// loopback, one batch at a time each; the server authenticates, applies
// the default in-flight budget, decompresses, validates, records the
// sequence in SQLite and writes the batch to the file sink (fsynced, closed
// files compressed in the background), and only then answers. The agents'
// side (encoding, compression, TLS) runs in the same process, on the same
// cores. Each op is one batch; MB/s counts event payload bytes.
//
//	go test -run '^$' -bench Ingest -benchtime 2000x ./server/comms/
func BenchmarkIngest(b *testing.B) {
	const agents, perBatch, payload = 16, 1000, 200
	compressFiles = true
	defer func() { compressFiles = false }()
	e := newPushEnv(b, ingest.Limits{MaxInflightRequests: ingest.DefaultMaxInflightRequests, MaxInflightBytes: ingest.DefaultMaxInflightBytes})
	c := e.client(connect.WithSendCompression("zstd"))
	type agent struct {
		token string
		msg   *commsv1.PushStatelessRequest
	}
	var as []*agent
	for range agents {
		_, tok := e.agent(b)
		as = append(as, &agent{token: tok, msg: &commsv1.PushStatelessRequest{Events: events(1, perBatch, payload)}})
	}
	size := 0
	for _, ev := range as[0].msg.Events {
		size += len(ev.Payload)
	}
	b.SetBytes(int64(size))
	b.ResetTimer()
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for _, a := range as {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				a.msg.Sequence++
				resp, err := push(context.Background(), c, a.token, a.msg)
				if err != nil || resp.Duplicate || resp.Accepted != perBatch {
					b.Errorf("push: %v %v", resp, err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N*perBatch)/b.Elapsed().Seconds(), "events/s")
}
