package server

import "syscall"

func peekEOF(fd uintptr) bool {
	var b [1]byte
	n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	switch err {
	case nil:
		return n == 0
	case syscall.ECONNRESET, syscall.EPIPE, syscall.ENOTCONN:
		return true
	}
	return false // EAGAIN: open, nothing sent
}
