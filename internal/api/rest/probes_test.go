package rest

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/health"
)

func TestProbeText(t *testing.T) {
	degraded := readySnapshot()
	degraded.Models[0].Degraded = true
	degraded.Models[0].Instances[1].State = health.StateOutOfTraffic

	tests := []struct {
		name       string
		snap       *health.Snapshot
		hide       bool
		target     string
		wantStatus int
		wantBody   string
	}{
		{"ok", readySnapshot(), false, "/readyz", 200, "ok"},
		{"verbose", readySnapshot(), false, "/livez?verbose", 200,
			"[+]ping ok\n[+]watchdog ok\nlivez check passed\n"},
		{"readyz verbose", readySnapshot(), false, "/readyz?verbose=1", 200,
			"[+]ping ok\n[+]watchdog ok\n[+]started ok\n[+]draining ok\n[+]model/add_sub/1 ok\n[+]models ok\nreadyz check passed\n"},
		{"degraded is a warning", degraded, false, "/readyz?verbose", 200,
			"[+]ping ok\n[+]watchdog ok\n[+]started ok\n[+]draining ok\n[+]model/add_sub/1 ok: degraded: 1 of 2 instances routable\n[+]models ok\nreadyz check passed\n"},
		{"failure is always verbose", notReadySnapshot(), false, "/readyz", 503,
			"[+]ping ok\n[+]watchdog ok\n[+]started ok\n[+]draining ok\n" +
				"[-]model/add_sub/1 failed: model add_sub version 1 is UNAVAILABLE: 0 of 2 instances routable, needs 1; add_sub_0 is EXITED: exit code 1\n" +
				"[-]models failed: no model is ready\nreadyz check failed\n"},
		{"reasons withheld", notReadySnapshot(), true, "/readyz", 503,
			"[+]ping ok\n[+]watchdog ok\n[+]started ok\n[+]draining ok\n" +
				"[-]model/add_sub/1 failed: reason withheld\n[-]models failed: reason withheld\nreadyz check failed\n"},
		{"exclude turns a failure into a pass", notReadySnapshot(), false,
			"/readyz?exclude=model/add_sub/1&exclude=models&exclude=etcd", 200, "ok"},
		{"exclude, verbose, unknown name warns", notReadySnapshot(), false,
			"/readyz?verbose&exclude=model/add_sub/1&exclude=models&exclude=etcd&exclude=b", 200,
			"[+]ping ok\n[+]watchdog ok\n[+]started ok\n[+]draining ok\n[+]model/add_sub/1 excluded: ok\n[+]models excluded: ok\n" +
				"warn: some health checks cannot be excluded: no matches for \"b\",\"etcd\"\nreadyz check passed\n"},
		{"startup not done", &health.Snapshot{Loading: "loading 2/3: identity"}, false, "/startupz", 503,
			"[-]startup failed: loading 2/3: identity\nstartupz check failed\n"},
		{"startup done", readySnapshot(), false, "/startupz?verbose", 200, "[+]startup ok\nstartupz check passed\n"},
		{"single check ok", readySnapshot(), false, "/readyz/model/add_sub/1", 200, "ok"},
		{"single check failing", notReadySnapshot(), false, "/readyz/models", 503, "internal server error: no model is ready\n"},
		{"single check withheld", notReadySnapshot(), true, "/readyz/models", 503, "internal server error: reason withheld\n"},
		{"draining fails readiness only", func() *health.Snapshot { s := readySnapshot(); s.Draining = true; return s }(), false,
			"/livez", 200, "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newEnv(t, tt.snap, Config{HideReasons: tt.hide}).do("GET", tt.target, nil)
			if rec.Code != tt.wantStatus || rec.Body.String() != tt.wantBody {
				t.Errorf("GET %s = %d\n%s\nwant %d\n%s", tt.target, rec.Code, rec.Body, tt.wantStatus, tt.wantBody)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "text/plain; charset=utf-8" {
				t.Errorf("Content-Type = %q, want text/plain", ct)
			}
		})
	}
}

func TestProbeUnknownCheckAndMethods(t *testing.T) {
	e := newEnv(t, readySnapshot(), Config{})
	rec := e.do("GET", "/readyz/etcd", nil)
	if rec.Code != http.StatusNotFound || !strings.Contains(errorOf(t, rec), `"etcd"`) {
		t.Errorf("GET /readyz/etcd = %d %s, want 404 naming the check", rec.Code, rec.Body)
	}
	for _, target := range []string{"/livez", "/readyz", "/startupz", "/readyz/models"} {
		rec := e.do("POST", target, nil)
		if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, HEAD" {
			t.Errorf("POST %s = %d Allow %q, want 405 with Allow", target, rec.Code, rec.Header().Get("Allow"))
		}
		errorOf(t, rec)
	}
	if rec := e.do("HEAD", "/readyz", nil); rec.Code != 200 {
		t.Errorf("HEAD /readyz = %d, want 200", rec.Code)
	}
}

func TestProbeJSON(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	snap := notReadySnapshot()
	snap.At = at
	in := &snap.Models[0].Instances[0]
	in.Restarts, in.LastExit, in.Since = 2, "exit code 1", at
	in.Checks = []health.CheckHealth{{
		Name: health.CheckHeartbeat, Passing: true, LastOK: false, LastMessage: "no pong in 5s",
		LastAt: at, Consecutive: 1, Since: at.Add(-time.Minute),
	}}
	in.Transitions = []health.Transition{{At: at, From: health.StateReady, To: health.StateExited, Reason: "exit code 1"}}

	for _, tc := range []struct {
		target string
		accept string
	}{{"/readyz?format=json", ""}, {"/readyz", "text/html, application/json;q=0.9"}} {
		rec := newEnv(t, snap, Config{}).do("GET", tc.target, nil, "Accept", tc.accept)
		if rec.Code != 503 || rec.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("GET %s = %d %s, want 503 JSON", tc.target, rec.Code, rec.Header().Get("Content-Type"))
		}
		got := decodeJSON[probeJSONBody](t, rec)
		if got.Probe != "readyz" || got.OK || len(got.Checks) != 6 || got.Checks[5].Reason != "no model is ready" {
			t.Errorf("probe verdict = %+v", got)
		}
		if got.Server.At == nil || !got.Server.At.Equal(at) || !got.Server.Started || !got.Server.StrictReadiness {
			t.Errorf("server = %+v", got.Server)
		}
		if len(got.Models) != 1 || len(got.Models[0].Instances) != 2 {
			t.Fatalf("models = %+v", got.Models)
		}
		gi := got.Models[0].Instances[0]
		if gi.State != "EXITED" || gi.Reason != "exit code 1" || gi.Restarts != 2 || gi.LastExit != "exit code 1" || gi.PID != 10 {
			t.Errorf("instance = %+v", gi)
		}
		if len(gi.Checks) != 1 || gi.Checks[0] != (checkHealthJSON{Name: "heartbeat", State: "pass", LastResult: "fail",
			LastMessage: "no pong in 5s", LastAt: gi.Checks[0].LastAt, Consecutive: 1, Since: gi.Checks[0].Since}) ||
			!gi.Checks[0].Since.Equal(at.Add(-time.Minute)) {
			t.Errorf("checks = %+v", gi.Checks)
		}
		if len(gi.Transitions) != 1 || gi.Transitions[0].From != "READY" || gi.Transitions[0].To != "EXITED" {
			t.Errorf("transitions = %+v", gi.Transitions)
		}
	}

	// Reasons withheld: states stay, free text goes.
	rec := newEnv(t, snap, Config{HideReasons: true}).do("GET", "/readyz?format=json&exclude=x", nil)
	body := rec.Body.String()
	for _, secret := range []string{"exit code 1\",\"since", "no pong", "no model is ready"} {
		if strings.Contains(body, secret) {
			t.Errorf("hidden-reasons JSON contains %q: %s", secret, body)
		}
	}
	got := decodeJSON[probeJSONBody](t, rec)
	if len(got.Warnings) != 1 || got.Models[0].Instances[0].State != "EXITED" {
		t.Errorf("hidden-reasons JSON = %+v", got)
	}

	// One check as JSON.
	rec = newEnv(t, readySnapshot(), Config{}).do("GET", "/livez/ping?format=json", nil)
	one := decodeJSON[probeJSONBody](t, rec)
	if rec.Code != 200 || !one.OK || len(one.Checks) != 1 || one.Checks[0].Name != "ping" {
		t.Errorf("GET /livez/ping?format=json = %d %+v", rec.Code, one)
	}
}

func TestLastResultIsNoneBeforeTheFirstResult(t *testing.T) {
	if got := (health.CheckHealth{Name: health.CheckHook}).LastResult(); got != "none" {
		t.Errorf("never-run check: last_result %q, want none", got)
	}
	if got := (health.CheckHealth{Name: health.CheckHook, LastAt: time.Now()}).LastResult(); got != "fail" {
		t.Errorf("failed check: last_result %q, want fail", got)
	}
}
