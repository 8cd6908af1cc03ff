package tritonmetrics

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// cpuSampler turns the cumulative CPU times of /proc/stat into a
// utilization over an interval: the interval between two scrapes, but at
// least minInterval (a scrape sooner than that answers the last value), and
// since boot on the first scrape.
type cpuSampler struct {
	dir         string
	minInterval time.Duration

	mu         sync.Mutex
	prevAt     time.Time
	prev       cpuTimes
	last       float64
	haveSample bool
}

// cpuTimes are the busy and total jiffies of all CPUs.
type cpuTimes struct{ busy, total uint64 }

func (s *cpuSampler) utilization(now time.Time) (float64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.haveSample && now.Sub(s.prevAt) < s.minInterval {
		return s.last, nil
	}
	cur, err := readCPUTimes(s.dir)
	if err != nil {
		return 0, err
	}
	base := cpuTimes{}
	if s.haveSample {
		base = s.prev
	}
	s.last = utilizationBetween(base, cur)
	s.prev, s.prevAt, s.haveSample = cur, now, true
	return s.last, nil
}

func utilizationBetween(a, b cpuTimes) float64 {
	if b.total <= a.total || b.busy < a.busy {
		return 0
	}
	u := float64(b.busy-a.busy) / float64(b.total-a.total)
	return min(max(u, 0), 1)
}

// readCPUTimes reads the aggregate "cpu" line of /proc/stat: user nice
// system idle iowait irq softirq steal (guest times are already inside
// user and nice). Idle and iowait are not busy.
func readCPUTimes(dir string) (cpuTimes, error) {
	b, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return cpuTimes{}, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 5 || f[0] != "cpu" {
		return cpuTimes{}, fmt.Errorf("%s/stat: first line is not the aggregate cpu line", dir)
	}
	var t cpuTimes
	for i, v := range f[1:min(len(f), 9)] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return cpuTimes{}, fmt.Errorf("%s/stat: %w", dir, err)
		}
		t.total += n
		if i != 3 && i != 4 { // idle, iowait
			t.busy += n
		}
	}
	return t, nil
}

// readMemInfo returns MemTotal and MemAvailable of /proc/meminfo in bytes.
func readMemInfo(dir string) (total, available uint64, err error) {
	f, err := os.Open(filepath.Join(dir, "meminfo"))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var haveTotal, haveAvail bool
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || key != "MemTotal" && key != "MemAvailable" {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s/meminfo: %s: %w", dir, key, err)
		}
		if len(fields) > 1 && fields[1] == "kB" {
			n *= 1024
		}
		if key == "MemTotal" {
			total, haveTotal = n, true
		} else {
			available, haveAvail = n, true
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if !haveTotal || !haveAvail {
		return 0, 0, errors.New(dir + "/meminfo: no MemTotal or MemAvailable")
	}
	return total, available, nil
}
