//go:build !linux

package server

import "errors"

func mapShm(key string, offset, size int64) (mapping, data []byte, err error) {
	return nil, nil, errors.New("system shared memory is served on Linux only")
}

func unmapShm([]byte) error { return nil }
