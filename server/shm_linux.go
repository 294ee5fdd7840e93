package server

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// shmDir is where Linux keeps POSIX shared memory objects: shm_open(key)
// opens shmDir/key.
const shmDir = "/dev/shm"

// mapShm maps size bytes at offset of the shared memory object key (as
// given to shm_open: "/name" or "name"), read-write and shared, so the
// client sees what the server writes.
func mapShm(key string, offset, size int64) (mapping, data []byte, err error) {
	name := strings.TrimPrefix(key, "/")
	if name == "" || name == "." || name == ".." || len(name) > 255 || strings.ContainsAny(name, "/\x00") {
		return nil, nil, errors.New("key " + strconv.Quote(key) + " is not a shared memory object name (\"/name\", as given to shm_open)")
	}
	// O_NOFOLLOW: a symlink planted in /dev/shm does not lead elsewhere.
	fd, err := syscall.Open(shmDir+"/"+name, syscall.O_RDWR|syscall.O_NOFOLLOW|syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, errors.New("opening shared memory object " + strconv.Quote(key) + ": " + err.Error())
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil, nil, errors.New("shared memory object " + strconv.Quote(key) + ": " + err.Error())
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return nil, nil, errors.New(strconv.Quote(key) + " is not a shared memory object")
	}
	if offset > st.Size || size > st.Size-offset {
		return nil, nil, errors.New("shared memory object " + strconv.Quote(key) + " holds " + strconv.FormatInt(st.Size, 10) +
			" bytes; the region needs " + strconv.FormatInt(offset+size, 10))
	}
	// mmap's offset must be page-aligned: map from the page the region
	// starts in.
	start := offset &^ int64(os.Getpagesize()-1)
	n := offset - start + size
	if n > int64(^uint(0)>>1) {
		return nil, nil, errors.New("the region is too large to map")
	}
	mapping, err = syscall.Mmap(fd, start, int(n), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, errors.New("mapping shared memory object " + strconv.Quote(key) + ": " + err.Error())
	}
	return mapping, mapping[offset-start:], nil
}

func unmapShm(mapping []byte) error {
	if mapping == nil {
		return nil
	}
	return syscall.Munmap(mapping)
}
