package rest

import (
	"bytes"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/vigilhq/vigil/internal/health"
)

// /livez, /readyz and /startupz follow the Kubernetes API server's health
// endpoints: "ok" on success; ?verbose lists every check; a failure is always
// verbose; ?exclude=name (repeatable) skips a check; /<probe>/<check> runs
// one check. Differences from the API server: failures are 503 (not 500) so
// load balancers treat them as "not now" rather than a server fault, and
// reasons are shown unless --health-hide-reasons is set. ?format=json (or
// Accept: application/json) returns the structured detail in probes_json.go.
//
// Nothing is logged per probe: kubelets probe every few seconds, and every
// transition is already logged once by the health engine.

// probeResult is one probe evaluated against one snapshot.
type probeResult struct {
	probe    health.Probe
	checks   []probeCheck
	unknown  []string // excluded names that match no check
	ok       bool
	snapshot *health.Snapshot
}

type probeCheck struct {
	health.NamedCheck
	Excluded bool
}

func evaluateProbe(snap *health.Snapshot, p health.Probe, exclude []string) probeResult {
	res := probeResult{probe: p, ok: true, snapshot: snap}
	excluded := map[string]bool{}
	for _, name := range exclude {
		excluded[name] = true
	}
	for _, c := range snap.Checks(p) {
		pc := probeCheck{NamedCheck: c}
		if excluded[c.Name] {
			pc.Excluded = true
			delete(excluded, c.Name)
		} else if !c.OK {
			res.ok = false
		}
		res.checks = append(res.checks, pc)
	}
	for name := range excluded {
		res.unknown = append(res.unknown, name)
	}
	slices.Sort(res.unknown)
	return res
}

func (s *server) probe(p health.Probe) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		res := evaluateProbe(s.snapshot(), p, q["exclude"])
		if wantsJSON(r) {
			writeJSON(w, healthStatus(res.ok), s.probeJSON(res))
			return
		}
		_, verbose := q["verbose"]
		if res.ok && !verbose {
			writeText(w, http.StatusOK, "ok")
			return
		}
		var b bytes.Buffer
		for _, c := range res.checks {
			switch {
			case c.Excluded:
				fmt.Fprintf(&b, "[+]%s excluded: ok\n", c.Name)
			case !c.OK:
				fmt.Fprintf(&b, "[-]%s failed: %s\n", c.Name, s.failureReason(c.Reason))
			case c.Reason != "" && !s.cfg.HideReasons:
				// A passing check can carry a warning, e.g. "degraded".
				fmt.Fprintf(&b, "[+]%s ok: %s\n", c.Name, oneLine(c.Reason))
			default:
				fmt.Fprintf(&b, "[+]%s ok\n", c.Name)
			}
		}
		if len(res.unknown) > 0 {
			fmt.Fprintf(&b, "warn: some health checks cannot be excluded: no matches for %s\n", quoteAll(res.unknown))
		}
		if res.ok {
			fmt.Fprintf(&b, "%s check passed\n", p)
			writeText(w, http.StatusOK, b.String())
			return
		}
		fmt.Fprintf(&b, "%s check failed\n", p)
		writeText(w, http.StatusServiceUnavailable, b.String())
	}
}

// probeCheck serves /<probe>/<check>: just that check.
func (s *server) probeCheck(p health.Probe) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("check")
		res := evaluateProbe(s.snapshot(), p, nil)
		i := slices.IndexFunc(res.checks, func(c probeCheck) bool { return c.Name == name })
		if i < 0 {
			writeErrorStatus(w, http.StatusNotFound, fmt.Sprintf("%s has no check named %q", p, name))
			return
		}
		c := res.checks[i]
		res.checks, res.ok, res.unknown = []probeCheck{c}, c.OK, nil
		if wantsJSON(r) {
			writeJSON(w, healthStatus(c.OK), s.probeJSON(res))
			return
		}
		if c.OK {
			writeText(w, http.StatusOK, "ok")
			return
		}
		writeText(w, http.StatusServiceUnavailable, "internal server error: "+s.failureReason(c.Reason)+"\n")
	}
}

func (s *server) failureReason(reason string) string {
	if s.cfg.HideReasons {
		return "reason withheld"
	}
	if reason == "" {
		return "no reason given"
	}
	return oneLine(reason)
}

// wantsJSON reports whether the client asked for the JSON form.
func wantsJSON(r *http.Request) bool {
	if r.URL.Query().Get("format") == "json" {
		return true
	}
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, _, _ := strings.Cut(part, ";")
		if strings.EqualFold(strings.TrimSpace(mt), "application/json") {
			return true
		}
	}
	return false
}

func writeText(w http.ResponseWriter, status int, body string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

// oneLine keeps a reason on its line so each check stays one line.
func oneLine(s string) string {
	return strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s)
}

func quoteAll(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return strings.Join(q, ",")
}
