package tlsconf

import (
	"crypto/tls"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fastinfer/internal/testutil"
)

func write(t *testing.T, path string, b []byte, mod time.Time) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	// Distinct modification times, whatever the file system's resolution.
	if err := os.Chtimes(path, mod, mod); err != nil {
		t.Fatal(err)
	}
}

func TestNewRefuses(t *testing.T) {
	dir := t.TempDir()
	ca := testutil.NewCA(t, "test CA")
	f := testutil.WriteTLS(t, dir, ca)
	_, otherKey := ca.Pair(t, "other", false, time.Now().Add(time.Hour))
	path := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		write(t, p, b, time.Now())
		return p
	}
	otherKeyFile := path("other-key.pem", otherKey)
	noCerts := path("empty-ca.pem", []byte("no certificates here\n"))
	garbage := path("garbage.pem", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	for _, tc := range []struct {
		name  string
		files Files
		want  string
	}{
		{"no files", Files{}, "no files"},
		{"certificate without key", Files{Cert: f.Cert}, "both a certificate and its key"},
		{"key without certificate", Files{Key: f.Key}, "both a certificate and its key"},
		{"client CA alone", Files{ClientCA: f.CA}, "both a certificate and its key"},
		{"missing certificate", Files{Cert: filepath.Join(dir, "nope.pem"), Key: f.Key}, "no such file"},
		{"missing key", Files{Cert: f.Cert, Key: filepath.Join(dir, "nope.pem")}, "no such file"},
		{"swapped", Files{Cert: f.Key, Key: f.Cert}, "swapped"},
		{"key of another certificate", Files{Cert: f.Cert, Key: otherKeyFile}, "does not match"},
		{"malformed certificate", Files{Cert: garbage, Key: f.Key}, "TLS pair"},
		{"client CA without certificates", Files{Cert: f.Cert, Key: f.Key, ClientCA: noCerts}, "holds no PEM certificate"},
		{"missing client CA", Files{Cert: f.Cert, Key: f.Key, ClientCA: filepath.Join(dir, "nope.pem")}, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := New(tc.files, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, %v; want an error containing %q", r, err, tc.want)
			}
		})
	}
	if r, err := New(Files{Cert: f.Cert, Key: f.Key, ClientCA: f.CA}, nil); err != nil || !r.ClientCertRequired() {
		t.Fatalf("New with good files = %v, %v", r, err)
	}
}

// clock is a settable time for the Recheck throttle.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestReloadOnRotation(t *testing.T) {
	dir := t.TempDir()
	ca := testutil.NewCA(t, "test CA")
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	t0 := time.Now().Add(-time.Minute)
	c1, k1 := ca.Pair(t, "first", false, time.Now().Add(time.Hour))
	write(t, certFile, c1, t0)
	write(t, keyFile, k1, t0)
	var logs testutil.Buffer
	r, err := New(Files{Cert: certFile, Key: keyFile}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Now()}
	r.now = clk.now
	r.checked.Store(clk.t.UnixNano())
	name := func() string {
		c, err := r.certificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf.Subject.CommonName
	}
	if got := name(); got != "first" {
		t.Fatalf("serving %q, want first", got)
	}

	// A rotation writes the certificate, then the key: between the two the
	// pair does not match, and the first one stays.
	c2, k2 := ca.Pair(t, "second", false, time.Now().Add(time.Hour))
	write(t, certFile, c2, t0.Add(time.Second))
	clk.t = clk.t.Add(Recheck)
	if got := name(); got != "first" {
		t.Fatalf("with a half-written rotation serving %q, want first", got)
	}
	if !strings.Contains(logs.String(), "do not load") {
		t.Fatalf("no warning for the mismatched pair; log:\n%s", logs.String())
	}
	write(t, keyFile, k2, t0.Add(2*time.Second))
	// Within Recheck of the last look, handshakes do not look again.
	clk.t = clk.t.Add(Recheck / 2)
	if got := name(); got != "first" {
		t.Fatalf("within Recheck serving %q, want first", got)
	}
	clk.t = clk.t.Add(Recheck / 2)
	if got := name(); got != "second" {
		t.Fatalf("after the rotation serving %q, want second", got)
	}
	if !strings.Contains(logs.String(), "TLS certificate reloaded") {
		t.Fatalf("no log of the reload:\n%s", logs.String())
	}
	if r.Reload() {
		t.Fatal("Reload with unchanged files reported a new pair")
	}

	// Files that vanish (a volume being remounted) keep the pair served.
	os.Remove(keyFile)
	clk.t = clk.t.Add(Recheck)
	if got := name(); got != "second" {
		t.Fatalf("with the key gone serving %q, want second", got)
	}
	if n := strings.Count(logs.String(), "unreadable"); n != 1 {
		t.Fatalf("%d warnings for the missing key, want 1:\n%s", n, logs.String())
	}
	clk.t = clk.t.Add(Recheck)
	name()
	if n := strings.Count(logs.String(), "unreadable"); n != 1 {
		t.Fatalf("the same missing key warned %d times, want once", n)
	}
}

func TestExpiryWarnings(t *testing.T) {
	ca := testutil.NewCA(t, "test CA")
	for _, tc := range []struct {
		name     string
		notAfter time.Duration
		want     string
	}{
		{"valid", 30 * 24 * time.Hour, ""},
		{"soon", 24 * time.Hour, "expires soon"},
		{"expired", -time.Minute, "has expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			c, k := ca.Pair(t, tc.name, false, time.Now().Add(tc.notAfter))
			write(t, filepath.Join(dir, "c.pem"), c, time.Now())
			write(t, filepath.Join(dir, "k.pem"), k, time.Now())
			var logs testutil.Buffer
			if _, err := New(Files{Cert: filepath.Join(dir, "c.pem"), Key: filepath.Join(dir, "k.pem")}, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
				t.Fatal(err)
			}
			got := logs.String()
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
				t.Fatalf("log %q, want %q", got, tc.want)
			}
		})
	}
}

// TestHandshakes runs real handshakes against Config: the server is
// verified by the CA, and client certificates are verified when given.
func TestHandshakes(t *testing.T) {
	dir := t.TempDir()
	ca, stranger := testutil.NewCA(t, "test CA"), testutil.NewCA(t, "another CA")
	f := testutil.WriteTLS(t, dir, ca)
	r, err := New(Files{Cert: f.Cert, Key: f.Key, ClientCA: f.CA}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", r.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	states := make(chan *tls.ConnectionState, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			if tc.Handshake() != nil {
				states <- nil
			} else {
				st := tc.ConnectionState()
				states <- &st
			}
			c.Close()
		}
	}()
	for _, tc := range []struct {
		name     string
		certs    []tls.Certificate
		ok       bool
		verified bool
	}{
		{"no client certificate", nil, true, false},
		{"client certificate from the CA", []tls.Certificate{ca.ClientCert(t, "client")}, true, true},
		{"client certificate from another CA", []tls.Certificate{stranger.ClientCert(t, "intruder")}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}
			if tc.certs != nil {
				// Sent whatever CAs the server names: Go's client would
				// otherwise keep back a certificate of another CA.
				cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tc.certs[0], nil }
			}
			conn, err := tls.Dial("tcp", ln.Addr().String(), cfg)
			if err == nil {
				// TLS 1.3 reports a refused client certificate on the first read.
				conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, err = conn.Read(make([]byte, 1))
				conn.Close()
			}
			st := <-states
			if (st != nil) != tc.ok {
				t.Fatalf("server handshake succeeded %v, want %v (client: %v)", st != nil, tc.ok, err)
			}
			if Verified(st) != tc.verified {
				t.Fatalf("Verified = %v, want %v", Verified(st), tc.verified)
			}
		})
	}
	// And a client that does not trust the CA refuses the server.
	if _, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: stranger.Pool(), ServerName: "localhost"}); err == nil {
		t.Fatal("a client trusting another CA accepted the server")
	}
	if st := <-states; st != nil {
		t.Fatal("the server completed a handshake its client refused")
	}
}

// A rotated client CA file takes effect without a restart: after the
// next look at the files, clients of the new CA are accepted and those
// of the old one refused.
func TestClientCARotation(t *testing.T) {
	dir := t.TempDir()
	oldCA, newCA := testutil.NewCA(t, "old CA"), testutil.NewCA(t, "new CA")
	f := testutil.WriteTLS(t, dir, oldCA)
	t0 := time.Now().Add(-time.Minute)
	write(t, f.CA, oldCA.PEM, t0)
	r, err := New(Files{Cert: f.Cert, Key: f.Key, ClientCA: f.CA}, nil)
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Now()}
	r.now = clk.now
	r.checked.Store(clk.t.UnixNano())
	ln, err := tls.Listen("tcp", "127.0.0.1:0", r.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Write([]byte{1})
			c.Close()
		}
	}()
	accepted := func(ca *testutil.CA) bool {
		cert := ca.ClientCert(t, "client")
		conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: oldCA.Pool(), ServerName: "localhost",
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }})
		if err != nil {
			return false
		}
		defer conn.Close()
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		return err == nil
	}
	if !accepted(oldCA) || accepted(newCA) {
		t.Fatal("before the rotation: want the old CA's client accepted and the new one's refused")
	}
	write(t, f.CA, newCA.PEM, t0.Add(time.Second))
	clk.t = clk.t.Add(Recheck)
	if !accepted(newCA) || accepted(oldCA) {
		t.Fatal("after the rotation: want the new CA's client accepted and the old one's refused")
	}
	// A CA file rewritten with no certificate in it keeps the CAs served.
	write(t, f.CA, []byte("not PEM\n"), t0.Add(2*time.Second))
	clk.t = clk.t.Add(Recheck)
	if !accepted(newCA) {
		t.Fatal("a broken CA file replaced the CAs served")
	}
}
