// Package tlsconf builds the servers' TLS configuration from PEM files.
//
// The certificate is read again when its files change, so a rotation
// (cert-manager renewing a Kubernetes secret, which the kubelet swaps in
// place in the pod's volume) needs no restart: the next handshake after
// the change, at most Recheck later, presents the new pair. A pair that
// does not load (a half-written key, a key that does not match) is
// logged and the previous pair is kept, so a bad rotation never takes
// the server off the network.
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
	files   Files
	log     *slog.Logger
	now     func() time.Time
	clients *x509.CertPool

	cert    atomic.Pointer[tls.Certificate]
	checked atomic.Int64 // unix nanoseconds of the last look at the files

	mu     sync.Mutex // one reload at a time
	loaded stamp      // the files as they were when cert was read
	failed stamp      // the files as they were when a reload last failed
}

// stamp is what changes when a file is replaced or rewritten.
type stamp struct {
	certMod, keyMod   time.Time
	certSize, keySize int64
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
	c, err := r.load()
	if err != nil {
		return nil, err
	}
	r.cert.Store(c)
	r.loaded = st
	r.checked.Store(r.now().UnixNano())
	if f.ClientCA != "" {
		pem, err := os.ReadFile(f.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("reading the client CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("the client CA file %s holds no PEM certificate", f.ClientCA)
		}
		r.clients = pool
	}
	return r, nil
}

// Config is the TLS configuration for a listener: TLS 1.2 at least, the
// current certificate on every handshake, and with client CAs, a client
// certificate verified against them when the client presents one.
// Whether an endpoint may be reached without one is the server's
// decision (ClientCertRequired): Kubernetes' probes present none.
func (r *Reloader) Config() *tls.Config {
	c := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.certificate,
	}
	if r.clients != nil {
		c.ClientCAs = r.clients
		c.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return c
}

// ClientCertRequired says whether client certificates are checked.
func (r *Reloader) ClientCertRequired() bool { return r.clients != nil }

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
	c, err := r.load()
	if err != nil {
		// Rotations write the two files one after the other: the next
		// look, a Recheck later, may find them matching.
		r.log.Warn("TLS certificate files changed but do not load; serving the previous certificate", "err", err)
		r.failed = st
		return false
	}
	r.cert.Store(c)
	r.loaded, r.failed = st, stamp{}
	r.log.Info("TLS certificate reloaded", "cert", r.files.Cert, "not_after", c.Leaf.NotAfter.UTC().Format(time.RFC3339))
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
	return stamp{certMod: ci.ModTime(), certSize: ci.Size(), keyMod: ki.ModTime(), keySize: ki.Size()}, nil
}

// load reads and checks the pair, and warns when it has expired or is
// about to.
func (r *Reloader) load() (*tls.Certificate, error) {
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
// that chains to the client CAs.
func Verified(st *tls.ConnectionState) bool {
	return st != nil && len(st.VerifiedChains) > 0
}
