package rest

import (
	"net/http"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/internal/health"
)

func notReadySnapshot() *health.Snapshot {
	s := readySnapshot()
	m := &s.Models[0]
	// As the engine reports a loaded version with too few routable
	// instances: UNAVAILABLE, with the first instance that is out.
	m.Ready = false
	m.State, m.Reason = health.ModelStateUnavailable, "0 of 2 instances routable, needs 1; add_sub_0 is EXITED: exit code 1"
	m.Instances[0].State, m.Instances[0].Reason = health.StateExited, "exit code 1"
	m.Instances[1].State = health.StateRestarting
	return s
}

func TestServerLiveAndReady(t *testing.T) {
	tests := []struct {
		name       string
		snap       *health.Snapshot
		hide       bool
		path       string
		wantStatus int
		wantBody   string
	}{
		{"live", readySnapshot(), false, "/v2/health/live", 200, `{"live":true}`},
		{"ready", readySnapshot(), false, "/v2/health/ready", 200, `{"ready":true}`},
		{"live while loading", &health.Snapshot{Loading: "loading 1/3: add_sub"}, false, "/v2/health/live", 200, `{"live":true}`},
		{"not ready while loading", &health.Snapshot{Loading: "loading 1/3: add_sub"}, false, "/v2/health/ready", 503, `{"ready":false,"reason":"loading 1/3: add_sub"}`},
		{"no snapshot yet", nil, false, "/v2/health/ready", 503, `{"ready":false}`},
		{"model down", notReadySnapshot(), false, "/v2/health/ready", 503,
			`{"ready":false,"reason":"model add_sub version 1 is UNAVAILABLE: 0 of 2 instances routable, needs 1; add_sub_0 is EXITED: exit code 1"}`},
		{"model down, reasons hidden", notReadySnapshot(), true, "/v2/health/ready", 503, `{"ready":false}`},
		{"watchdog", &health.Snapshot{WatchdogStalled: true}, false, "/v2/health/live", 503,
			`{"live":false,"reason":"the health engine's event loop stalled"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.snap, Config{HideReasons: tt.hide})
			rec := e.do("GET", tt.path, nil)
			if rec.Code != tt.wantStatus || rec.Body.String() != tt.wantBody {
				t.Errorf("GET %s = %d %s, want %d %s", tt.path, rec.Code, rec.Body, tt.wantStatus, tt.wantBody)
			}
		})
	}
}

func TestModelReady(t *testing.T) {
	tests := []struct {
		name       string
		snap       *health.Snapshot
		path       string
		wantStatus int
		wantBody   string
	}{
		{"ready", readySnapshot(), "/v2/models/add_sub/ready", 200, `{"name":"add_sub","version":"1","ready":true}`},
		{"ready versioned", readySnapshot(), "/v2/models/add_sub/versions/1/ready", 200, `{"name":"add_sub","version":"1","ready":true}`},
		{"not ready", notReadySnapshot(), "/v2/models/add_sub/ready", 503,
			`{"name":"add_sub","version":"1","ready":false,"reason":"model add_sub version 1 is UNAVAILABLE: 0 of 2 instances routable, needs 1; add_sub_0 is EXITED: exit code 1"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newEnv(t, tt.snap, Config{}).do("GET", tt.path, nil)
			if rec.Code != tt.wantStatus || rec.Body.String() != tt.wantBody {
				t.Errorf("GET %s = %d %s, want %d %s", tt.path, rec.Code, rec.Body, tt.wantStatus, tt.wantBody)
			}
		})
	}
	for _, path := range []string{"/v2/models/nope/ready", "/v2/models/add_sub/versions/7/ready"} {
		rec := newEnv(t, readySnapshot(), Config{}).do("GET", path, nil)
		if rec.Code != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", path, rec.Code)
		}
		if msg := errorOf(t, rec); !strings.Contains(msg, "unknown model") {
			t.Errorf("GET %s error = %q, want it to name the unknown model", path, msg)
		}
	}
}

func TestHealthHandlerServesOnlyHealth(t *testing.T) {
	h := NewHealthHandler(fakeHealth{readySnapshot()}, Config{Metrics: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("# metrics\n"))
	})})
	for path, want := range map[string]int{
		"/v2/health/live":          200,
		"/v2/health/ready":         200,
		"/v2/models/add_sub/ready": 200,
		"/livez":                   200,
		"/readyz":                  200,
		"/startupz":                200,
		"/metrics":                 200,
		"/v2":                      404,
		"/v2/models/add_sub":       404,
	} {
		if rec := serve(t, h, "GET", path, nil); rec.Code != want {
			t.Errorf("health handler GET %s = %d, want %d", path, rec.Code, want)
		}
	}
	if rec := serve(t, h, "POST", "/v2/models/add_sub/infer", []byte("{}")); rec.Code != http.StatusNotFound {
		t.Errorf("health handler POST infer = %d, want 404", rec.Code)
	}
}

func TestMetrics(t *testing.T) {
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = w.Write([]byte("vigil_up 1\n"))
	})
	rec := newEnv(t, readySnapshot(), Config{Metrics: metrics}).do("GET", "/metrics", nil)
	if rec.Code != 200 || rec.Body.String() != "vigil_up 1\n" {
		t.Errorf("GET /metrics = %d %q, want the metrics handler's answer", rec.Code, rec.Body)
	}
	if rec := newEnv(t, readySnapshot(), Config{}).do("GET", "/metrics", nil); rec.Code != http.StatusNotFound {
		t.Errorf("GET /metrics without a metrics handler = %d, want 404", rec.Code)
	}
}
