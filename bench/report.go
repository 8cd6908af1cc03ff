package main

import (
	"fmt"
	"io"
	"sort"
	"time"
)

// dist summarizes a set of durations.
type dist struct {
	n             int
	p50, p99, max time.Duration
}

func summarize(ds []time.Duration) dist {
	if len(ds) == 0 {
		return dist{}
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return dist{n: len(s), p50: at(0.50), p99: at(0.99), max: s[len(s)-1]}
}

type row struct {
	name  string
	d     dist
	extra string
}

type report struct {
	w    io.Writer
	rows []row
}

func (r *report) add(name string, d dist, extra string) {
	r.rows = append(r.rows, row{name, d, extra})
}

func (r *report) print() {
	fmt.Fprintf(r.w, "%-52s %7s %10s %10s %10s  %s\n", "measurement", "n", "p50", "p99", "max", "vs baseline / target")
	for _, row := range r.rows {
		fmt.Fprintf(r.w, "%-52s %7d %10s %10s %10s  %s\n", row.name, row.d.n, us(row.d.p50), us(row.d.p99), us(row.d.max), row.extra)
	}
	fmt.Fprintln(r.w)
}

func us(d time.Duration) string {
	switch {
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/1e6)
	case d < 10*time.Microsecond && d > -10*time.Microsecond:
		return fmt.Sprintf("%.1fµs", float64(d)/1e3)
	default:
		return fmt.Sprintf("%.0fµs", float64(d)/1e3)
	}
}

func ratio(a, b time.Duration) string {
	if b == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f× baseline", float64(a)/float64(b))
}

func target(ok bool, format string, args ...any) string {
	verdict := "meets"
	if !ok {
		verdict = "MISSES"
	}
	return verdict + " target " + fmt.Sprintf(format, args...)
}
