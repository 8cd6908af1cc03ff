package rest

import (
	"bytes"
	"encoding/json"
	"net/http"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/sharedmemory"
)

// SharedMemory is the system shared memory registry the routes of the
// shared memory extension drive (internal/sharedmemory.Registry).
type SharedMemory interface {
	Enabled() bool
	Register(name, key string, offset, byteSize uint64) error
	Unregister(name string) error
	Status(name string) ([]sharedmemory.Status, error)
}

// cudaUnsupported is the answer to a CUDA shared memory registration.
const cudaUnsupported = "CUDA shared memory is not supported: vigil serves CPU models; use system shared memory (v2/systemsharedmemory)"

// sharedMemoryRoutes are the routes of Triton's shared memory extension:
// system shared memory through s.cfg.SharedMemory, and CUDA shared memory,
// which vigil does not offer: registering is refused as Unsupported, the
// status lists nothing and unregistering (which Triton's examples do to
// start clean) succeeds, while client shared memory is enabled. Register
// and unregister are admin routes: with an admin token configured, making
// the server map a client's shared memory needs it.
func (s *server) sharedMemoryRoutes() []route {
	const sys, cuda = "/v2/systemsharedmemory", "/v2/cudasharedmemory"
	get, post := http.MethodGet, http.MethodPost
	return []route{
		{method: get, pattern: sys + "/status", h: s.shmStatus},
		{method: get, pattern: sys + "/region/{region}/status", h: s.shmStatus},
		{method: post, pattern: sys + "/region/{region}/register", h: s.shmRegister, admin: true},
		{method: post, pattern: sys + "/unregister", h: s.shmUnregister, admin: true},
		{method: post, pattern: sys + "/region/{region}/unregister", h: s.shmUnregister, admin: true},
		{method: get, pattern: cuda + "/status", h: s.cudaStatus},
		{method: get, pattern: cuda + "/region/{region}/status", h: s.cudaStatus},
		{method: post, pattern: cuda + "/region/{region}/register", h: s.cudaRegister, admin: true},
		{method: post, pattern: cuda + "/unregister", h: s.cudaUnregister, admin: true},
		{method: post, pattern: cuda + "/region/{region}/unregister", h: s.cudaUnregister, admin: true},
	}
}

func (s *server) shmStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.cfg.SharedMemory.Status(r.PathValue("region"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// shmRegisterBody is the register request. Pointers tell a missing field
// from a zero.
type shmRegisterBody struct {
	Key      *string `json:"key"`
	Offset   *uint64 `json:"offset"`
	ByteSize *uint64 `json:"byte_size"`
}

func (s *server) shmRegister(w http.ResponseWriter, r *http.Request) {
	if !s.cfg.SharedMemory.Enabled() {
		s.writeError(w, r, apierr.New(apierr.Unsupported, sharedmemory.DisabledMessage))
		return
	}
	body, err := s.readBody(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var req shmRegisterBody
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&req); err != nil {
		s.writeError(w, r, apierr.New(apierr.InvalidArgument,
			"malformed system shared memory register request: %s (want {\"key\": string, \"offset\": uint, \"byte_size\": uint})", describeJSONError(err)))
		return
	}
	switch {
	case req.Key == nil:
		s.writeError(w, r, apierr.New(apierr.InvalidArgument, "Shared memory register request has no 'key' field"))
		return
	case req.ByteSize == nil:
		s.writeError(w, r, apierr.New(apierr.InvalidArgument, "Shared memory register request has no 'byte_size' field"))
		return
	}
	var offset uint64
	if req.Offset != nil {
		offset = *req.Offset
	}
	if err := s.cfg.SharedMemory.Register(r.PathValue("region"), *req.Key, offset, *req.ByteSize); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (s *server) shmUnregister(w http.ResponseWriter, r *http.Request) {
	if err := s.cfg.SharedMemory.Unregister(r.PathValue("region")); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (s *server) cudaStatus(w http.ResponseWriter, r *http.Request) {
	if name := r.PathValue("region"); name != "" {
		s.writeError(w, r, apierr.New(apierr.NotFound, "Unable to find cuda shared memory region: '%s'", name))
		return
	}
	writeJSON(w, http.StatusOK, []sharedmemory.Status{})
}

func (s *server) cudaRegister(w http.ResponseWriter, r *http.Request) {
	if !s.cfg.SharedMemory.Enabled() {
		s.writeError(w, r, apierr.New(apierr.Unsupported, sharedmemory.DisabledMessage))
		return
	}
	s.writeError(w, r, apierr.New(apierr.Unsupported, cudaUnsupported))
}

func (s *server) cudaUnregister(w http.ResponseWriter, r *http.Request) {
	if !s.cfg.SharedMemory.Enabled() {
		s.writeError(w, r, apierr.New(apierr.Unsupported, sharedmemory.DisabledMessage))
		return
	}
	w.WriteHeader(http.StatusOK)
}
