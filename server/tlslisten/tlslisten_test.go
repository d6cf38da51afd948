package tlslisten_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/server/pki"
	"github.com/tetherhq/tether/server/tlslisten"
)

// serve starts an http.Server on a tlslisten.Listener, as tether-server
// does, and returns its address and a client pool trusting it.
func serve(t *testing.T, o tlslisten.Options) (*tlslisten.Listener, *x509.CertPool) {
	t.Helper()
	ca, _, err := pki.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.IssueServer([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	conf := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := tlslisten.New(inner, conf, o)
	srv := &http.Server{TLSConfig: conf.Clone(), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || !r.TLS.HandshakeComplete {
			http.Error(w, "no TLS state", http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, r.Proto)
	})}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
		}
	})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM)
	return ln, pool
}

func get(t *testing.T, tr *http.Transport, url string) string {
	t.Helper()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %d %s", url, resp.StatusCode, body)
	}
	return string(body)
}

func TestServesHTTP2AndHTTP1(t *testing.T) {
	ln, pool := serve(t, tlslisten.Options{HandshakeTimeout: 5 * time.Second})
	url := "https://" + ln.Addr().String() + "/"
	h2 := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
	if got := get(t, h2, url); got != "HTTP/2.0" {
		t.Errorf("with h2 offered: %s, want HTTP/2.0", got)
	}
	var p http.Protocols
	p.SetHTTP1(true)
	h1 := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, Protocols: &p}
	if got := get(t, h1, url); got != "HTTP/1.1" {
		t.Errorf("with http/1.1 only: %s, want HTTP/1.1", got)
	}
}

func TestPlainHTTPIsTold(t *testing.T) {
	ln, _ := serve(t, tlslisten.Options{HandshakeTimeout: 5 * time.Second})
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.0 400") {
		t.Fatalf("answer %q, %v; want HTTP/1.0 400", line, err)
	}
}

func TestStalledHandshakeHoldsNoOne(t *testing.T) {
	ln, pool := serve(t, tlslisten.Options{HandshakeTimeout: 500 * time.Millisecond})
	// A client that connects and says nothing: the others are served
	// meanwhile, and it is closed after the handshake timeout.
	stalled, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
	if got := get(t, tr, "https://"+ln.Addr().String()+"/"); got != "HTTP/2.0" {
		t.Errorf("got %s", got)
	}
	_ = stalled.SetReadDeadline(time.Now().Add(10 * time.Second))
	if !closedByPeer(stalled) {
		t.Fatal("the stalled connection is still open after the handshake timeout")
	}
}

// closedByPeer reports whether reading c ends in an error other than its
// read deadline.
func closedByPeer(c net.Conn) bool {
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

func TestCloseEndsHandshakesAndAccept(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := tlslisten.New(inner, &tls.Config{}, tlslisten.Options{})
	stalled, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	accepted := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		accepted <- err
	}()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-accepted:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still blocked after Close")
	}
	_ = stalled.SetReadDeadline(time.Now().Add(5 * time.Second))
	if !closedByPeer(stalled) {
		t.Fatal("the connection whose handshake was under way is still open after Close")
	}
	if _, err := net.DialTimeout("tcp", inner.Addr().String(), time.Second); err == nil {
		t.Fatal("the inner listener still accepts after Close")
	}
}
