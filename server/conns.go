package server

import (
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// connListener wraps every accepted connection for two jobs fasthttp does
// not do for us:
//
//   - It caps concurrent connections per client address (max > 0). This is
//     ours rather than fasthttp's MaxConnsPerIP because fasthttp's wrapper
//     hides the socket (so departed clients could not be detected; see
//     gone.go) and races with Shutdown in fasthttp 1.70. A connection over
//     the cap gets a 429 and is closed.
//   - It keeps the live connections and whether each has sent a byte, so
//     Shutdown can close the ones that never did. fasthttp counts a
//     connection waiting for its first request as busy, so one opened and
//     never used (a browser's preconnect, an HTTP client's spare) held
//     Shutdown until ReadTimeout (30 s).
type connListener struct {
	net.Listener
	max    int
	mu     sync.Mutex
	counts map[string]int
	live   map[*connState]net.Conn
	// tls: the connections speak TLS, so a refusal cannot be an HTTP
	// answer written in the clear; it is a close.
	tls bool
}

func newConnListener(ln net.Listener, max int) *connListener {
	return &connListener{Listener: ln, max: max, counts: map[string]int{}, live: map[*connState]net.Conn{}}
}

// tooManyConns is the whole answer to a connection over the cap.
var tooManyConns = func() []byte {
	body := `{"error":{"code":"too_many_connections","message":"too many connections from your address"}}`
	return []byte("HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nConnection: close\r\nRetry-After: 1\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
}()

func (l *connListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		st := &connState{l: l, accepted: time.Now()}
		var wrapped net.Conn
		if tc, ok := c.(*net.TCPConn); ok {
			wrapped = &trackedTCPConn{TCPConn: tc, connState: st}
		} else {
			wrapped = &trackedConn{Conn: c, connState: st}
		}
		l.mu.Lock()
		if l.max > 0 {
			st.ip = remoteIP(c)
			if l.counts[st.ip] >= l.max {
				l.mu.Unlock()
				if l.tls {
					c.Close()
				} else {
					go refuse(c)
				}
				continue
			}
			l.counts[st.ip]++
		}
		l.live[st] = wrapped
		l.mu.Unlock()
		return wrapped, nil
	}
}

// closeUnused closes the connections accepted before cutoff that have not
// sent a byte, and says how many it closed.
func (l *connListener) closeUnused(cutoff time.Time) int {
	var idle []net.Conn
	l.mu.Lock()
	for st, c := range l.live {
		if !st.used.Load() && st.accepted.Before(cutoff) {
			idle = append(idle, c)
		}
	}
	l.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
	return len(idle)
}

// forget drops a closed connection and gives its address's slot back.
func (l *connListener) forget(st *connState) {
	l.mu.Lock()
	delete(l.live, st)
	if l.max > 0 {
		if l.counts[st.ip]--; l.counts[st.ip] <= 0 {
			delete(l.counts, st.ip)
		}
	}
	l.mu.Unlock()
}

// refuse answers a connection over the cap without waiting on a client
// that does not read.
func refuse(c net.Conn) {
	c.SetWriteDeadline(time.Now().Add(time.Second))
	c.Write(tooManyConns)
	c.Close()
}

func remoteIP(c net.Conn) string {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String()
	}
	return host
}

// connState is what the listener knows of one connection.
type connState struct {
	l        *connListener
	ip       string
	accepted time.Time
	used     atomic.Bool // it has sent at least one byte
	once     sync.Once
}

func (st *connState) read(n int) {
	if n > 0 && !st.used.Load() {
		st.used.Store(true)
	}
}

func (st *connState) closed() { st.once.Do(func() { st.l.forget(st) }) }

// trackedTCPConn keeps *net.TCPConn's methods (SyscallConn among them, for
// the departed-client check).
type trackedTCPConn struct {
	*net.TCPConn
	*connState
}

func (c *trackedTCPConn) Read(p []byte) (int, error) {
	n, err := c.TCPConn.Read(p)
	c.read(n)
	return n, err
}

func (c *trackedTCPConn) Close() error {
	err := c.TCPConn.Close()
	c.closed()
	return err
}

type trackedConn struct {
	net.Conn
	*connState
}

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read(n)
	return n, err
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.closed()
	return err
}
