// Package fault runs code that reads memory another process may take
// away: a client's shared memory object, which it can truncate, so that
// reading the mapped pages past its new end raises SIGBUS.
package fault

import "runtime/debug"

// Guard runs fn with memory faults turned into panics (for this
// goroutine only, as debug.SetPanicOnFault works), and reports whether
// one happened. Other panics go on.
func Guard(fn func()) (faulted bool) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if v := recover(); v != nil {
			if _, ok := v.(interface{ Addr() uintptr }); ok {
				faulted = true
				return
			}
			panic(v)
		}
	}()
	fn()
	return false
}
