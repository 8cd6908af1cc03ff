package responder

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCheckRealtimeRefusesPrioritiesOutOfRange(t *testing.T) {
	for _, p := range []int{-1, 0, MaxRTPriority + 1} {
		if err := CheckRealtime(p); err == nil || !strings.Contains(err.Error(), "not between 1 and 99") {
			t.Errorf("CheckRealtime(%d) = %v, want a range error", p, err)
		}
	}
}

// CheckRealtime leaves no thread of the caller under SCHED_FIFO, whether
// or not it may use it.
func TestCheckRealtimeLeavesNoRealtimeThread(t *testing.T) {
	_ = CheckRealtime(1)
	if tid, ok := threadNotUnder(unix.SCHED_NORMAL); !ok {
		t.Fatalf("thread %d of the test process left under another policy", tid)
	}
}

// threadNotUnder returns a thread of this process whose policy is not
// policy, if there is one.
func threadNotUnder(policy uint32) (int, bool) {
	ents, _ := os.ReadDir("/proc/self/task")
	for _, e := range ents {
		tid, _ := strconv.Atoi(e.Name())
		if a, err := unix.SchedGetAttr(tid, 0); err == nil && a.Policy != policy {
			return tid, false
		}
	}
	return 0, true
}

const realtimeChild = "VIGIL_TEST_REALTIME_CHILD"

// SetRealtime puts every thread under SCHED_FIFO, and threads started after
// it inherit the policy. It runs in a child process of the test: the test
// process's own threads must not become realtime.
func TestSetRealtimeEveryThread(t *testing.T) {
	if os.Getenv(realtimeChild) == "1" {
		os.Exit(realtimeChildMain())
	}
	if err := CheckRealtime(1); err != nil {
		t.Skipf("SCHED_FIFO is not allowed here: %v", err)
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestSetRealtimeEveryThread$")
	cmd.Env = append(os.Environ(), realtimeChild+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "every thread under SCHED_FIFO") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

// lockThreads starts n goroutines, each locked to a thread of its own and
// parked until hold is closed, and returns once all of them run.
func lockThreads(n int, hold <-chan struct{}) {
	ready := make(chan struct{})
	for range n {
		go func() {
			runtime.LockOSThread()
			ready <- struct{}{}
			<-hold
		}()
		<-ready
	}
}

func realtimeChildMain() int {
	// More threads than the runtime starts on its own.
	hold := make(chan struct{})
	defer close(hold)
	lockThreads(4, hold)
	if err := SetRealtime(1); err != nil {
		fmt.Println("SetRealtime:", err)
		return 1
	}
	lockThreads(2, hold) // threads started now inherit the policy
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	for _, e := range ents {
		tid, _ := strconv.Atoi(e.Name())
		a, err := unix.SchedGetAttr(tid, 0)
		if errors.Is(err, unix.ESRCH) {
			continue
		}
		if err != nil || a.Policy != unix.SCHED_FIFO || a.Priority != 1 {
			fmt.Printf("thread %d: policy %v priority %v err %v\n", tid, a.Policy, a.Priority, err)
			return 1
		}
	}
	fmt.Printf("every thread under SCHED_FIFO (%d)\n", len(ents))
	return 0
}
