package server

import (
	"net"
	"strconv"
	"sync"
	"time"
)

// perIPListener caps concurrent connections per client address. It is
// ours rather than fasthttp's MaxConnsPerIP because fasthttp's wrapper
// hides the socket (so departed clients could not be detected; see
// gone.go) and races with Shutdown in fasthttp 1.70. A connection over
// the cap gets a 429 and is closed.
type perIPListener struct {
	net.Listener
	max    int
	mu     sync.Mutex
	counts map[string]int
}

func newPerIPListener(ln net.Listener, max int) *perIPListener {
	return &perIPListener{Listener: ln, max: max, counts: map[string]int{}}
}

// tooManyConns is the whole answer to a connection over the cap.
var tooManyConns = func() []byte {
	body := `{"error":{"code":"too_many_connections","message":"too many connections from your address"}}`
	return []byte("HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nConnection: close\r\nRetry-After: 1\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
}()

func (l *perIPListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c)
		l.mu.Lock()
		if l.counts[ip] >= l.max {
			l.mu.Unlock()
			go refuse(c)
			continue
		}
		l.counts[ip]++
		l.mu.Unlock()
		release := func() {
			l.mu.Lock()
			if l.counts[ip]--; l.counts[ip] <= 0 {
				delete(l.counts, ip)
			}
			l.mu.Unlock()
		}
		if tc, ok := c.(*net.TCPConn); ok {
			return &countedTCPConn{TCPConn: tc, release: release}, nil
		}
		return &countedConn{Conn: c, release: release}, nil
	}
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

// countedTCPConn keeps *net.TCPConn's methods (SyscallConn among them, for
// the departed-client check) and gives its slot back once, on Close.
type countedTCPConn struct {
	*net.TCPConn
	once    sync.Once
	release func()
}

func (c *countedTCPConn) Close() error {
	err := c.TCPConn.Close()
	c.once.Do(c.release)
	return err
}

type countedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
