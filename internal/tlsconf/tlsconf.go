// Package tlsconf builds the servers' TLS configuration from PEM files.
//
// The files are read again when they change, so a rotation
// (cert-manager renewing a Kubernetes secret, which the kubelet swaps in
// place in the pod's volume) needs no restart: the next handshake after
// the change, at most Recheck later, presents the new pair and checks
// client certificates against the new CAs. Files that do not load (a
// half-written key, a key that does not match, a CA file without a
// certificate) are logged and the previous ones kept, so a bad rotation
// never takes the server off the network.
package tlsconf

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Recheck is how often, at most, a handshake looks at the files again.
const Recheck = time.Second

// expirySoon is how close to its end a loaded certificate must be for
// the log to warn about it.
const expirySoon = 7 * 24 * time.Hour

// Files names the PEM files. Cert and Key are the server's pair (Cert may
// hold the chain after the leaf). ClientCA, when set, holds the CAs whose
// client certificates are accepted.
type Files struct {
	Cert, Key, ClientCA string
}

// Validate says whether the set of files is one that can be served.
func (f Files) Validate() error {
	switch {
	case f.Cert == "" && f.Key == "" && f.ClientCA == "":
		return nil
	case f.Cert == "" || f.Key == "":
		return errors.New("TLS needs both a certificate and its key (--tls-cert and --tls-key)")
	}
	return nil
}

// Enabled says whether TLS is asked for.
func (f Files) Enabled() bool { return f.Cert != "" || f.Key != "" || f.ClientCA != "" }

// Reloader holds the current certificate and the client CAs.
type Reloader struct {
	files Files
	log   *slog.Logger
	now   func() time.Time

	cert    atomic.Pointer[tls.Certificate]
	clients atomic.Pointer[x509.CertPool] // nil without Files.ClientCA
	checked atomic.Int64                  // unix nanoseconds of the last look at the files

	mu     sync.Mutex // one reload at a time
	loaded stamp      // the files as they were when cert was read
	failed stamp      // the files as they were when a reload last failed
}

// stamp is what changes when a file is replaced or rewritten.
type stamp struct {
	certMod, keyMod, caMod    time.Time
	certSize, keySize, caSize int64
}

// New loads the files. A missing or malformed file, a key that does not
// match its certificate, or a client CA file without a certificate in it
// is an error naming the file.
func New(f Files, log *slog.Logger) (*Reloader, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	if !f.Enabled() {
		return nil, errors.New("tlsconf: no files given")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Reloader{files: f, log: log, now: time.Now}
	st, err := r.stat()
	if err != nil {
		return nil, err
	}
	c, pool, err := r.load()
	if err != nil {
		return nil, err
	}
	r.cert.Store(c)
	if pool != nil {
		r.clients.Store(pool)
	}
	r.loaded = st
	r.checked.Store(r.now().UnixNano())
	return r, nil
}

// Config is the TLS configuration for a listener: TLS 1.2 at least, the
// current certificate on every handshake, and with client CAs, a client
// certificate verified against them when the client presents one.
// Whether an endpoint may be reached without one is the server's
// decision (ClientCertRequired): Kubernetes' probes present none.
//
// Client certificates are verified by VerifyConnection against the CAs
// loaded last, rather than by crypto/tls against a fixed ClientCAs, so
// that a rotated CA file takes effect: a handshake whose client presents
// a certificate finishes only if it chains to them (see Verified).
func (r *Reloader) Config() *tls.Config {
	c := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.certificate,
	}
	if r.files.ClientCA != "" {
		c.ClientAuth = tls.RequestClientCert
		c.VerifyConnection = r.verifyClient
	}
	return c
}

// verifyClient checks a presented client certificate chain against the
// current client CAs; no certificate is left to the server's endpoints.
func (r *Reloader) verifyClient(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return nil
	}
	opts := x509.VerifyOptions{
		Roots:         r.clients.Load(),
		Intermediates: x509.NewCertPool(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
		return fmt.Errorf("client certificate: %w", err)
	}
	return nil
}

// ClientCertRequired says whether client certificates are checked.
func (r *Reloader) ClientCertRequired() bool { return r.files.ClientCA != "" }

// Certificate is the pair handshakes present now.
func (r *Reloader) Certificate() *tls.Certificate { return r.cert.Load() }

func (r *Reloader) certificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	now := r.now().UnixNano()
	if last := r.checked.Load(); now-last >= int64(Recheck) && r.checked.CompareAndSwap(last, now) {
		r.Reload()
	}
	return r.cert.Load(), nil
}

// Reload reads the pair again if its files changed since it was loaded;
// handshakes call it at most once per Recheck. It reports whether a new
// pair is now served.
func (r *Reloader) Reload() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, err := r.stat()
	if err != nil {
		if st != r.failed {
			r.log.Warn("TLS certificate files unreadable; serving the previous certificate", "err", err)
			r.failed = st
		}
		return false
	}
	if st == r.loaded || st == r.failed {
		return false
	}
	c, pool, err := r.load()
	if err != nil {
		// Rotations write the files one after the other: the next look, a
		// Recheck later, may find them matching.
		r.log.Warn("TLS files changed but do not load; serving the previous certificate and client CAs", "err", err)
		r.failed = st
		return false
	}
	r.cert.Store(c)
	if pool != nil {
		r.clients.Store(pool)
	}
	r.loaded, r.failed = st, stamp{}
	r.log.Info("TLS certificate reloaded", "cert", r.files.Cert, "not_after", c.Leaf.NotAfter.UTC().Format(time.RFC3339), "client_ca", r.files.ClientCA)
	return true
}

func (r *Reloader) stat() (stamp, error) {
	ci, err := os.Stat(r.files.Cert)
	if err != nil {
		return stamp{}, fmt.Errorf("TLS certificate: %w", err)
	}
	ki, err := os.Stat(r.files.Key)
	if err != nil {
		return stamp{certMod: ci.ModTime(), certSize: ci.Size()}, fmt.Errorf("TLS key: %w", err)
	}
	st := stamp{certMod: ci.ModTime(), certSize: ci.Size(), keyMod: ki.ModTime(), keySize: ki.Size()}
	if r.files.ClientCA != "" {
		ai, err := os.Stat(r.files.ClientCA)
		if err != nil {
			return st, fmt.Errorf("TLS client CA: %w", err)
		}
		st.caMod, st.caSize = ai.ModTime(), ai.Size()
	}
	return st, nil
}

// load reads and checks the pair, and warns when it has expired or is
// about to; and the client CAs, when there is a file of them.
func (r *Reloader) load() (*tls.Certificate, *x509.CertPool, error) {
	c, err := r.loadPair()
	if err != nil || r.files.ClientCA == "" {
		return c, nil, err
	}
	pem, err := os.ReadFile(r.files.ClientCA)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the client CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, nil, fmt.Errorf("the client CA file %s holds no PEM certificate", r.files.ClientCA)
	}
	return c, pool, nil
}

func (r *Reloader) loadPair() (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(r.files.Cert)
	if err != nil {
		return nil, fmt.Errorf("reading the TLS certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(r.files.Key)
	if err != nil {
		return nil, fmt.Errorf("reading the TLS key: %w", err)
	}
	if bytes.Contains(certPEM, []byte("PRIVATE KEY")) && !bytes.Contains(keyPEM, []byte("PRIVATE KEY")) {
		return nil, fmt.Errorf("%s holds a private key and %s none: are --tls-cert and --tls-key swapped?", r.files.Cert, r.files.Key)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("TLS pair %s, %s: %w", r.files.Cert, r.files.Key, err)
	}
	// Go parses the leaf since 1.23; Leaf is set whatever the GODEBUG.
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("TLS certificate %s: %w", r.files.Cert, err)
		}
	}
	switch left := c.Leaf.NotAfter.Sub(r.now()); {
	case left <= 0:
		r.log.Warn("the TLS certificate has expired: clients that verify it will refuse the server", "cert", r.files.Cert, "not_after", c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	case left < expirySoon:
		r.log.Warn("the TLS certificate expires soon", "cert", r.files.Cert, "not_after", c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return &c, nil
}

// Verified says whether a connection's client presented a certificate
// that chains to the client CAs: on a connection made with Config,
// whose VerifyConnection refuses any other, whether it presented one.
func Verified(st *tls.ConnectionState) bool {
	return st != nil && st.HandshakeComplete && (len(st.VerifiedChains) > 0 || len(st.PeerCertificates) > 0)
}
