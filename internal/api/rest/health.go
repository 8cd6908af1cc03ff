package rest

import (
	"net/http"

	"github.com/vigilhq/vigil/internal/apierr"
)

// The Open Inference Protocol health endpoints. They read the snapshot only,
// answer 200 when healthy and 503 with a JSON reason when not: clients that
// test status == 200 (tritonclient) keep working, and humans see why.

type liveBody struct {
	Live   bool   `json:"live"`
	Reason string `json:"reason,omitempty"`
}

type readyBody struct {
	Ready  bool   `json:"ready"`
	Reason string `json:"reason,omitempty"`
}

type modelReadyBody struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Ready   bool   `json:"ready"`
	Reason  string `json:"reason,omitempty"`
}

func (s *server) serverLive(w http.ResponseWriter, r *http.Request) {
	ok, reason := s.snapshot().Live()
	writeJSON(w, healthStatus(ok), liveBody{Live: ok, Reason: s.reason(reason)})
}

func (s *server) serverReady(w http.ResponseWriter, r *http.Request) {
	ok, reason := s.snapshot().Ready()
	writeJSON(w, healthStatus(ok), readyBody{Ready: ok, Reason: s.reason(reason)})
}

func (s *server) modelReady(w http.ResponseWriter, r *http.Request) {
	name, version := r.PathValue("model"), r.PathValue("version")
	snap := s.snapshot()
	m, found := snap.Model(name, version)
	if !found {
		writeErrorStatus(w, http.StatusNotFound, notFoundMessage(name, version))
		return
	}
	ok, reason, _ := snap.ModelReady(m.Name, m.Version)
	writeJSON(w, healthStatus(ok), modelReadyBody{Name: m.Name, Version: m.Version, Ready: ok, Reason: s.reason(reason)})
}

func notFoundMessage(name, version string) string {
	if version == "" {
		return apierr.UnknownModel(name).Error()
	}
	return apierr.UnknownVersion(name, version).Error()
}

func healthStatus(ok bool) int {
	if ok {
		return http.StatusOK
	}
	return http.StatusServiceUnavailable
}

// reason returns reason, or "" when reasons are withheld.
func (s *server) reason(reason string) string {
	if s.cfg.HideReasons {
		return ""
	}
	return reason
}
