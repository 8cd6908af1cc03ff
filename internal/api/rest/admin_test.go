package rest

import (
	"net/http"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/internal/model"
)

// Every route of the repository API, and every shared memory register or
// unregister route, is an admin route, and every admin route refuses a
// request without the admin token before its handler runs.
func TestEveryAdminRouteChecksTheToken(t *testing.T) {
	e := newEnv(t, readySnapshot(), Config{AdminToken: "s3cret"})
	called := 0
	e.models.IndexFunc = func(bool) []model.IndexEntry { called++; return nil }
	s := newServer(e.models, fakeHealth{readySnapshot()}, Config{})
	admins := 0
	for _, rt := range s.apiRoutes() {
		shmChange := strings.Contains(rt.pattern, "sharedmemory") && !strings.HasSuffix(rt.pattern, "/status")
		if (strings.HasPrefix(rt.pattern, "/v2/repository") || shmChange) != rt.admin {
			t.Errorf("%s %s: admin = %v; every repository route and shared memory (un)register route, and only those, is an admin route", rt.method, rt.pattern, rt.admin)
		}
		if !rt.admin {
			continue
		}
		admins++
		path := strings.ReplaceAll(strings.ReplaceAll(rt.pattern, "{model}", "m"), "{region}", "r")
		if rec := e.do(rt.method, path, nil); rec.Code != http.StatusUnauthorized {
			t.Errorf("%s %s without a token: %d %s, want 401", rt.method, path, rec.Code, rec.Body)
		}
		if rec := e.do(rt.method, path, nil, "Authorization", "Bearer wrong"); rec.Code != http.StatusForbidden {
			t.Errorf("%s %s with a wrong token: %d %s, want 403", rt.method, path, rec.Code, rec.Body)
		}
	}
	if admins != 9 {
		t.Errorf("%d admin routes, want 9 (index, load, unload; system and CUDA shared memory register, unregister, unregister all)", admins)
	}
	if called != 0 || len(e.models.loads) != 0 {
		t.Error("an unauthorized request reached the model manager")
	}
}

// With --health-hide-reasons and no admin token the index is public, so it
// withholds reasons as the health endpoints do.
func TestRepositoryIndexHidesReasonsWithoutAToken(t *testing.T) {
	e := newEnv(t, readySnapshot(), Config{HideReasons: true})
	e.models.IndexFunc = func(bool) []model.IndexEntry {
		return []model.IndexEntry{{Name: "broken", Version: "1", State: "UNAVAILABLE", Reason: "/secret/path raised"}}
	}
	rec := e.do("POST", "/v2/repository/index", nil)
	if rec.Code != 200 || strings.Contains(rec.Body.String(), "secret") || !strings.Contains(rec.Body.String(), "UNAVAILABLE") {
		t.Fatalf("index = %d %s", rec.Code, rec.Body)
	}
}

// From the start of the drain every response closes its connection.
func TestDrainingResponsesCloseTheConnection(t *testing.T) {
	snap := readySnapshot()
	e := newEnv(t, snap, Config{})
	if rec := e.do("GET", "/v2/health/live", nil); rec.Header().Get("Connection") != "" {
		t.Fatalf("Connection %q before the drain", rec.Header().Get("Connection"))
	}
	d := *snap
	d.Draining = true
	e = newEnv(t, &d, Config{})
	for _, path := range []string{"/v2/health/live", "/v2/health/ready", "/nope"} {
		if rec := e.do("GET", path, nil); rec.Header().Get("Connection") != "close" {
			t.Errorf("GET %s while draining: Connection %q, want close", path, rec.Header().Get("Connection"))
		}
	}
	h := NewHealthHandler(fakeHealth{&d}, Config{})
	if rec := serve(t, h, "GET", "/readyz", nil); rec.Header().Get("Connection") != "close" {
		t.Errorf("health port while draining: Connection %q, want close", rec.Header().Get("Connection"))
	}
}
