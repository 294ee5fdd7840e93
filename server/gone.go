package server

import (
	"net"
	"sync"
	"syscall"

	"github.com/valyala/fasthttp"
)

// goneCheck tells the batcher whether a request's client has closed its
// connection, so that rows nobody will read are dropped before they run
// (fasthttp has no per-request cancellation). Pooled with its func value
// bound once, so a request costs no allocation.
type goneCheck struct {
	ctx *fasthttp.RequestCtx
	fn  func() bool
}

var gonePool = sync.Pool{New: func() any {
	g := &goneCheck{}
	g.fn = g.gone
	return g
}}

// watchClient returns the check for ctx's client; release it with
// unwatchClient once the batcher has answered.
func watchClient(ctx *fasthttp.RequestCtx) *goneCheck {
	g := gonePool.Get().(*goneCheck)
	g.ctx = ctx
	return g
}

func unwatchClient(g *goneCheck) {
	g.ctx = nil
	gonePool.Put(g)
}

func (g *goneCheck) gone() bool {
	if g.ctx == nil {
		return false
	}
	return peerClosed(g.ctx.Conn())
}

// peerClosed reports whether the other end of c has closed it: a
// non-blocking peek sees end-of-file or a reset. Pipelined bytes, or none
// yet, mean the client is still there. Connections that are not sockets
// (in-memory listeners, wrappers) are taken to be open. Under TLS the
// socket is peeked: a client that closes after TLS's close_notify alert
// has sent bytes first, and is noticed only when the batcher answers.
func peerClosed(c net.Conn) bool {
	sc, ok := netConn(c).(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	err = rc.Read(func(fd uintptr) bool {
		closed = peekEOF(fd)
		return true // never wait for readability
	})
	return err == nil && closed
}
