package responder

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// The child may run under SCHED_FIFO (Config.RTPriority): then a probe's
// arrival preempts whatever else runs on a CPU, and the answer waits for
// no one. A probe still waits for its prober to be woken with the answer,
// which this process cannot change.

// MaxRTPriority is the highest SCHED_FIFO priority Linux offers.
const MaxRTPriority = 99

func fifo(prio int) unix.SchedAttr {
	return unix.SchedAttr{Policy: unix.SCHED_FIFO, Priority: uint32(prio)}
}

// CheckRealtime reports whether this process may run threads under
// SCHED_FIFO at prio (it needs CAP_SYS_NICE or an RLIMIT_RTPRIO of at least
// prio). It tries on a thread of its own, which it puts back under its
// former policy and which ends with the check, so that no thread of the
// caller keeps the policy.
func CheckRealtime(prio int) error {
	if prio < 1 || prio > MaxRTPriority {
		return fmt.Errorf("SCHED_FIFO priority %d is not between 1 and %d", prio, MaxRTPriority)
	}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the runtime ends the thread with the goroutine.
		runtime.LockOSThread()
		was, err := unix.SchedGetAttr(0, 0)
		if err != nil {
			errc <- err
			return
		}
		a := fifo(prio)
		if err := unix.SchedSetAttr(0, &a, 0); err != nil {
			errc <- err
			return
		}
		errc <- unix.SchedSetAttr(0, was, 0)
	}()
	if err := <-errc; err != nil {
		return fmt.Errorf("cannot run under SCHED_FIFO at priority %d (it needs CAP_SYS_NICE or an RLIMIT_RTPRIO of at least %d, and on a kernel with realtime group scheduling a realtime budget for the process's cgroup): %w", prio, prio, err)
	}
	return nil
}

// SetRealtime puts every thread of this process under SCHED_FIFO at prio.
// A thread inherits the policy of the thread that starts it, so once every
// thread has it, threads started later do too; it goes over the threads
// again until a pass finds none left to set.
func SetRealtime(prio int) error {
	for range 10 {
		tids, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		set := 0
		for _, e := range tids {
			tid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			cur, err := unix.SchedGetAttr(tid, 0)
			if errors.Is(err, unix.ESRCH) {
				continue // ended meanwhile
			}
			if err != nil {
				return fmt.Errorf("thread %d: %w", tid, err)
			}
			if cur.Policy == unix.SCHED_FIFO && cur.Priority == uint32(prio) {
				continue
			}
			a := fifo(prio)
			if err := unix.SchedSetAttr(tid, &a, 0); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("thread %d: SCHED_FIFO at priority %d: %w", tid, prio, err)
			}
			set++
		}
		if set == 0 {
			return nil
		}
	}
	return errors.New("threads kept starting without SCHED_FIFO")
}
