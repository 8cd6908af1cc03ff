package rest

import (
	"context"
	"net/http"

	"github.com/vigilhq/vigil/internal/apierr"
)

// Triton's model repository extension: index, load and unload. The admin
// token (if any) is checked before these handlers run.

type indexRequest struct {
	Ready bool `json:"ready"`
}

type indexEntryBody struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	State   string `json:"state"`
	Reason  string `json:"reason"`
}

type loadRequest struct {
	Parameters map[string]any `json:"parameters"`
}

func (s *server) repositoryIndex(w http.ResponseWriter, r *http.Request) {
	body, err := s.readBody(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var req indexRequest
	if err := decodeOptionalJSON(body, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	entries := s.models.Index(r.Context(), req.Ready)
	out := make([]indexEntryBody, 0, len(entries))
	for _, e := range entries {
		reason := e.Reason
		if s.cfg.HideReasons && s.cfg.AdminToken == "" {
			// Without a token the index is as public as the health
			// endpoints, and withholds reasons as they do.
			reason = ""
		}
		out = append(out, indexEntryBody{Name: e.Name, Version: e.Version, State: e.State, Reason: reason})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) repositoryLoad(w http.ResponseWriter, r *http.Request) {
	s.repositoryAction(w, r, "load", s.models.Load)
}

func (s *server) repositoryUnload(w http.ResponseWriter, r *http.Request) {
	s.repositoryAction(w, r, "unload", s.models.Unload)
}

func (s *server) repositoryAction(w http.ResponseWriter, r *http.Request, verb string,
	act func(ctx context.Context, name string, params map[string]any) error) {
	name := r.PathValue("model")
	body, err := s.readBody(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var req loadRequest
	if err := decodeOptionalJSON(body, &req); err != nil {
		s.writeError(w, r, apierr.Wrap(apierr.InvalidArgument, err, "%s of model %q", verb, name))
		return
	}
	params, err := normalizeParameters(req.Parameters, "parameters")
	if err != nil {
		s.writeError(w, r, apierr.Wrap(apierr.InvalidArgument, err, "%s of model %q", verb, name))
		return
	}
	if err := act(r.Context(), name, params); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeRawJSON(w, http.StatusOK, []byte("{}"))
}
