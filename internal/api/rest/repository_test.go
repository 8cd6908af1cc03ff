package rest

import (
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/model"
)

func TestRepositoryIndex(t *testing.T) {
	e := newEnv(t, readySnapshot(), Config{})
	var gotReady []bool
	e.models.IndexFunc = func(readyOnly bool) []model.IndexEntry {
		gotReady = append(gotReady, readyOnly)
		if readyOnly {
			return nil
		}
		return []model.IndexEntry{
			{Name: "add_sub", Version: "1", State: "READY"},
			{Name: "broken", Version: "1", State: "UNAVAILABLE", Reason: "instance broken_0 FAILED: restarts exhausted"},
		}
	}
	rec := e.do("POST", "/v2/repository/index", nil)
	want := `[{"name":"add_sub","version":"1","state":"READY","reason":""},` +
		`{"name":"broken","version":"1","state":"UNAVAILABLE","reason":"instance broken_0 FAILED: restarts exhausted"}]`
	if rec.Code != 200 || rec.Body.String() != want {
		t.Errorf("index = %d %s, want %s", rec.Code, rec.Body, want)
	}
	if rec := e.do("POST", "/v2/repository/index", []byte(`{"ready":true}`)); rec.Code != 200 || rec.Body.String() != "[]" {
		t.Errorf("ready index = %d %s, want []", rec.Code, rec.Body)
	}
	if !reflect.DeepEqual(gotReady, []bool{false, true}) {
		t.Errorf("Index(readyOnly) calls = %v", gotReady)
	}
	rec = e.do("POST", "/v2/repository/index", []byte(`{"ready":"yes"}`))
	if rec.Code != 400 || !strings.Contains(errorOf(t, rec), "field ready") {
		t.Errorf("bad index body = %d %s, want 400 naming the field", rec.Code, rec.Body)
	}
}

func TestRepositoryLoadUnload(t *testing.T) {
	e := newEnv(t, readySnapshot(), Config{})
	rec := e.do("POST", "/v2/repository/models/add_sub/load", []byte(`{"parameters":{"config":"{\"max_batch_size\":4}","n":3,"f":0.5,"b":true}}`))
	if rec.Code != 200 || rec.Body.String() != "{}" {
		t.Fatalf("load = %d %s", rec.Code, rec.Body)
	}
	rec = e.do("POST", "/v2/repository/models/add_sub/unload", nil)
	if rec.Code != 200 || rec.Body.String() != "{}" {
		t.Fatalf("unload = %d %s", rec.Code, rec.Body)
	}
	want := []loadCall{
		{"load", "add_sub", map[string]any{"config": `{"max_batch_size":4}`, "n": int64(3), "f": 0.5, "b": true}},
		{"unload", "add_sub", map[string]any{}},
	}
	if !reflect.DeepEqual(e.models.loads, want) {
		t.Errorf("calls = %#v\nwant %#v", e.models.loads, want)
	}

	for body, wantMsg := range map[string]string{
		`{"parameters":`:               "malformed JSON",
		`{"parameters":{"x":[1]}}`:     `"x" must be a string, number or boolean`,
		`{"parameters":{"x":{"y":1}}}`: `"x" must be a string, number or boolean`,
		`[]`:                           "expected an object",
	} {
		rec := e.do("POST", "/v2/repository/models/add_sub/load", []byte(body))
		if rec.Code != 400 || !strings.Contains(errorOf(t, rec), wantMsg) || !strings.Contains(errorOf(t, rec), `"add_sub"`) {
			t.Errorf("load %s = %d %s, want 400 with %q", body, rec.Code, rec.Body, wantMsg)
		}
	}

	e.models.LoadErr = apierr.New(apierr.Unavailable, "explicit model load / unload is not allowed if polling is enabled")
	if rec := e.do("POST", "/v2/repository/models/add_sub/load", nil); rec.Code != 503 {
		t.Errorf("load refused by the manager = %d, want the mapped 503", rec.Code)
	}
	e.models.LoadErr = apierr.New(apierr.NotFound, "no model \"zzz\" in the repository")
	if rec := e.do("POST", "/v2/repository/models/zzz/unload", nil); rec.Code != 404 {
		t.Errorf("unload unknown = %d, want 404", rec.Code)
	}
}

func TestRepositoryAdminToken(t *testing.T) {
	e := newEnv(t, readySnapshot(), Config{AdminToken: "s3cret"})
	e.models.IndexFunc = func(bool) []model.IndexEntry { return nil }
	routes := []string{"/v2/repository/index", "/v2/repository/models/add_sub/load", "/v2/repository/models/add_sub/unload"}
	for _, path := range routes {
		for _, tc := range []struct {
			auth       string
			wantStatus int
		}{
			{"", http.StatusUnauthorized},
			{"Basic czNjcmV0", http.StatusUnauthorized},
			{"Bearer", http.StatusUnauthorized},
			{"Bearer wrong", http.StatusForbidden},
			{"Bearer s3cret", http.StatusOK},
			{"bearer s3cret", http.StatusOK},
		} {
			var rec = e.do("POST", path, nil, "Authorization", tc.auth)
			if rec.Code != tc.wantStatus {
				t.Errorf("POST %s with %q = %d, want %d", path, tc.auth, rec.Code, tc.wantStatus)
			}
			if rec.Code == http.StatusUnauthorized && rec.Header().Get("WWW-Authenticate") == "" {
				t.Errorf("401 without WWW-Authenticate")
			}
			if rec.Code != 200 {
				errorOf(t, rec)
			}
		}
	}
	if len(e.models.loads) != 4 {
		t.Errorf("load/unload ran %d times, want only with the right token (4)", len(e.models.loads))
	}
	// The token protects only the repository API.
	if rec := e.do("GET", "/v2/health/ready", nil); rec.Code != 200 {
		t.Errorf("health with admin token set = %d", rec.Code)
	}
}
