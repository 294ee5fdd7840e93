package cpusched

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"unsafe"
)

const (
	schedOther       = 0
	schedBatch       = 3
	schedResetOnFork = 0x40000000
)

// Set gives every thread of the process the named policy and returns how
// many threads it changed. Threads inherit the policy of the thread that
// creates them, so threads started later (Go's, ONNX Runtime's, OpenCV's)
// get it too once every existing thread has it. Normal leaves the process
// as it is. Switching between SCHED_OTHER and SCHED_BATCH needs no
// privilege.
func Set(policy string) (int, error) {
	var want uintptr
	switch policy {
	case Normal, "":
		return 0, nil
	case Batch:
		want = schedBatch
	default:
		return 0, fmt.Errorf("unknown scheduling policy %q (want %s or %s)", policy, Batch, Normal)
	}
	total := 0
	// Go may start a thread while the list is walked, from a thread not yet
	// changed; walk again until a pass changes nothing.
	for pass := 0; pass < 10; pass++ {
		tids, err := threads()
		if err != nil {
			return total, err
		}
		changed := 0
		for _, tid := range tids {
			pol, err := get(tid)
			if errors.Is(err, syscall.ESRCH) {
				continue // the thread ended meanwhile
			}
			if err != nil {
				return total, err
			}
			if pol == want {
				continue
			}
			if err := set(tid, want); err != nil && !errors.Is(err, syscall.ESRCH) {
				return total, fmt.Errorf("setting the scheduling policy of thread %d: %w", tid, err)
			}
			changed++
		}
		total += changed
		if changed == 0 {
			return total, nil
		}
	}
	return total, errors.New("threads kept appearing while the scheduling policy was set")
}

// Current returns the policy every thread of the process has, or "mixed".
func Current() (string, error) {
	tids, err := threads()
	if err != nil {
		return "", err
	}
	name := ""
	for _, tid := range tids {
		pol, err := get(tid)
		if errors.Is(err, syscall.ESRCH) {
			continue
		}
		if err != nil {
			return "", err
		}
		n := "other"
		switch pol {
		case schedOther:
			n = Normal
		case schedBatch:
			n = Batch
		}
		if name != "" && n != name {
			return "mixed", nil
		}
		name = n
	}
	return name, nil
}

func threads() ([]int, error) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, fmt.Errorf("listing threads: %w", err)
	}
	tids := make([]int, 0, len(ents))
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}

func get(tid int) (uintptr, error) {
	pol, _, e := syscall.RawSyscall(syscall.SYS_SCHED_GETSCHEDULER, uintptr(tid), 0, 0)
	if e != 0 {
		return 0, e
	}
	return pol &^ schedResetOnFork, nil
}

func set(tid int, policy uintptr) error {
	var priority int32 // struct sched_param; must be 0 for these policies
	_, _, e := syscall.RawSyscall(syscall.SYS_SCHED_SETSCHEDULER, uintptr(tid), policy, uintptr(unsafe.Pointer(&priority)))
	if e != 0 {
		return e
	}
	return nil
}
