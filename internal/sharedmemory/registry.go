// Package sharedmemory implements the system shared memory extension of the
// inference protocol: clients register POSIX shared memory objects (by key,
// as shm_open names them) as named regions, then send inputs in them and ask
// for outputs to be written into them instead of carrying tensor bytes in
// the request and the response.
//
// The Registry owns every mapping. A region is mapped once, at Register,
// and unmapped at Unregister or Close; a request that uses a region holds a
// lease on it, so that unmapping waits for the requests in flight (as in
// Triton, an unregister during a request takes effect when it ends).
//
// Client shared memory is a security choice: a client that may register
// regions makes the server read and write shared memory objects it can
// open. It is off unless Config.Enabled is set (--allow-client-shm).
package sharedmemory

import (
	"bytes"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/tensor"
)

// DefaultDir is where Linux keeps POSIX shared memory objects: shm_open
// names a file in it.
const DefaultDir = "/dev/shm"

// ReservedPrefix starts keys that belong to Triton's Python backend; as in
// Triton, clients cannot register them.
const ReservedPrefix = "triton_python_backend_shm_region_"

// StubPrefix starts keys of the shared memory vigil itself creates for its
// model stubs; clients cannot register them either.
const StubPrefix = "vigil_"

// DisabledMessage is Triton's text for a register or unregister while
// client shared memory is off.
const DisabledMessage = "Client shared memory is disabled. Start the server with '--allow-client-shm=true' to enable."

// Config configures a Registry.
type Config struct {
	// Enabled allows clients to register regions (--allow-client-shm).
	// When false, Register and Unregister answer Unsupported and Status
	// lists nothing.
	Enabled bool
	// Dir is the directory of POSIX shared memory objects; empty means
	// DefaultDir. Tests point it elsewhere.
	Dir string
	// Logger receives registrations and unmaps; nil discards.
	Logger *slog.Logger
}

// Status describes one registered region, as the status routes report it.
type Status struct {
	Name     string `json:"name"`
	Key      string `json:"key"`
	Offset   uint64 `json:"offset"`
	ByteSize uint64 `json:"byte_size"`
}

// Registry holds the registered regions. Its methods are safe for
// concurrent use.
type Registry struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	regions map[string]*region
	// draining holds unregistered regions that requests still lease.
	draining map[*region]struct{}
	closed   bool
	// lastID numbers registrations (region.id).
	lastID uint64
}

// New returns an empty Registry.
func New(cfg Config) *Registry {
	if cfg.Dir == "" {
		cfg.Dir = DefaultDir
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Registry{cfg: cfg, log: log, regions: map[string]*region{}, draining: map[*region]struct{}{}}
}

// Enabled reports whether clients may register regions.
func (r *Registry) Enabled() bool { return r.cfg.Enabled }

// Register maps byteSize bytes at offset of the shared memory object key
// and registers them as region name.
func (r *Registry) Register(name, key string, offset, byteSize uint64) error {
	if !r.cfg.Enabled {
		return apierr.New(apierr.Unsupported, DisabledMessage)
	}
	if name == "" {
		return apierr.New(apierr.InvalidArgument, "'region name' is necessary to register system shared memory region")
	}
	object, err := objectName(name, key)
	if err != nil {
		return err
	}
	if byteSize == 0 {
		return apierr.New(apierr.InvalidArgument,
			"failed to register shared memory region '%s': invalid args: byte_size is 0; a region holds at least one byte", name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return apierr.Unavailablef("cannot register shared memory region '%s': the server is shutting down", name)
	}
	if _, ok := r.regions[name]; ok {
		return apierr.New(apierr.AlreadyExists, "shared memory region '%s' already in manager", name)
	}
	m, err := mapObject(r.cfg.Dir, name, key, object, offset, byteSize)
	if err != nil {
		return err
	}
	r.lastID++
	r.regions[name] = &region{status: Status{Name: name, Key: key, Offset: offset, ByteSize: byteSize}, m: m, id: r.lastID}
	r.log.Info("shared memory region registered", "region", name, "key", key, "offset", offset, "byte_size", byteSize)
	return nil
}

// Unregister removes region name, or every region when name is empty. An
// unknown name is not an error, as in Triton. A region in use by requests
// in flight leaves the registry at once and is unmapped when they end.
func (r *Registry) Unregister(name string) error {
	if !r.cfg.Enabled {
		return apierr.New(apierr.Unsupported, DisabledMessage)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if name == "" {
		for n := range r.regions {
			r.removeLocked(n)
		}
		return nil
	}
	r.removeLocked(name)
	return nil
}

// removeLocked takes a region out of the map and unmaps it unless leases
// hold it; the last lease then unmaps it.
func (r *Registry) removeLocked(name string) {
	reg, ok := r.regions[name]
	if !ok {
		return
	}
	delete(r.regions, name)
	reg.removed = true
	if reg.leases == 0 {
		r.unmapLocked(reg)
	} else {
		r.draining[reg] = struct{}{}
		r.log.Info("shared memory region unregistered: unmapped when its requests end", "region", name, "requests", reg.leases)
	}
}

func (r *Registry) unmapLocked(reg *region) {
	if err := reg.m.unmap(); err != nil {
		r.log.Warn("shared memory region: munmap failed", "region", reg.status.Name, "err", err)
		return
	}
	r.log.Info("shared memory region unmapped", "region", reg.status.Name, "key", reg.status.Key)
}

// Status describes region name, or every region (sorted by name) when name
// is empty.
func (r *Registry) Status(name string) ([]Status, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if name != "" {
		reg, ok := r.regions[name]
		if !ok {
			return nil, apierr.New(apierr.NotFound, "Unable to find system shared memory region: '%s'", name)
		}
		return []Status{reg.status}, nil
	}
	out := make([]Status, 0, len(r.regions))
	for _, reg := range r.regions {
		out = append(out, reg.status)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Close unregisters every region and refuses new registrations. Regions
// still leased are unmapped when their requests end.
func (r *Registry) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for n := range r.regions {
		r.removeLocked(n)
	}
}

// Mapped is the number of regions still mapped, unregistered ones waiting
// for their requests included. Tests use it to see that every mapping goes.
func (r *Registry) Mapped() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.regions) + len(r.draining)
}

// region is one registered region.
type region struct {
	status  Status
	m       *mapping
	id      uint64 // this registration's number, never reused
	leases  int
	removed bool
}

// Lease is a hold on a region for the length of one request: the bytes of
// [offset, offset+size) of the region stay mapped until Release.
type Lease struct {
	r      *Registry
	reg    *region
	offset uint64 // within the region
	data   []byte
	once   sync.Once
}

// Acquire leases size bytes at offset within region name. The errors are
// Triton's: an unknown region is NotFound, an offset or size outside the
// region InvalidArgument.
func (r *Registry) Acquire(name string, offset, size uint64) (*Lease, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	reg, ok := r.regions[name]
	if !ok {
		return nil, apierr.New(apierr.NotFound, "Unable to find shared memory region: '%s'", name)
	}
	bs := reg.status.ByteSize
	if offset >= bs {
		return nil, apierr.New(apierr.InvalidArgument,
			"Invalid offset for shared memory region: '%s': offset %d is not below the region's byte_size %d", name, offset, bs)
	}
	if size > bs-offset {
		return nil, apierr.New(apierr.InvalidArgument,
			"Invalid offset + byte size for shared memory region: '%s': %d + %d is over the region's byte_size %d", name, offset, size, bs)
	}
	reg.leases++
	return &Lease{r: r, reg: reg, offset: offset, data: reg.m.data[offset : offset+size : offset+size]}, nil
}

// Region is the region's name.
func (l *Lease) Region() string { return l.reg.status.Name }

// Key is the shared memory object's key as registered; with Offset it lets
// another process (a model stub) map the same bytes itself.
func (l *Lease) Key() string { return l.reg.status.Key }

// ObjectOffset is where the leased bytes start within the shared memory
// object (the region's offset plus the offset within the region).
func (l *Lease) ObjectOffset() uint64 {
	return l.reg.status.Offset + l.offset
}

// share describes the leased bytes for a model stub that maps them itself:
// through the read-only descriptor, or the read-write one for an output's
// room. hold must keep the lease.
func (l *Lease) share(write bool, hold func() func()) *tensor.Shared {
	fd := l.reg.m.ro
	if write {
		fd = l.reg.m.rw
	}
	return &tensor.Shared{FD: fd, Offset: l.ObjectOffset(), ID: l.reg.id, Mem: l.data, Hold: hold}
}

// Len is the number of leased bytes.
func (l *Lease) Len() int { return len(l.data) }

// Read copies the leased bytes into a new slice. A fault while reading
// (the client truncated the object under the mapping) is an error, not a
// crash.
func (l *Lease) Read() ([]byte, error) {
	var out []byte
	// Cloned rather than made and copied: the runtime does not zero what
	// the copy overwrites.
	if err := guard(l.reg.status.Name, func() { out = bytes.Clone(l.data) }); err != nil {
		return nil, err
	}
	return out, nil
}

// Write copies p to the start of the leased bytes; p must fit.
func (l *Lease) Write(p []byte) error {
	if len(p) > len(l.data) {
		return fmt.Errorf("%d bytes do not fit in %d leased bytes of region '%s'", len(p), len(l.data), l.reg.status.Name)
	}
	return guard(l.reg.status.Name, func() { copy(l.data, p) })
}

// Release ends the lease; the last lease of an unregistered region unmaps
// it. Release is idempotent.
func (l *Lease) Release() {
	l.once.Do(func() {
		r := l.r
		r.mu.Lock()
		defer r.mu.Unlock()
		l.reg.leases--
		if l.reg.leases == 0 && l.reg.removed {
			delete(r.draining, l.reg)
			r.unmapLocked(l.reg)
		}
	})
}

// objectName checks a key as Triton does and returns the name of its file
// in the shared memory directory: the key without its leading slashes,
// which must not contain another slash (shm_open refuses those).
func objectName(name, key string) (string, error) {
	object := strings.TrimLeft(key, "/")
	if object == "" {
		return "", apierr.New(apierr.InvalidArgument, "cannot register shared memory region '%s' - invalid shm key '%s'", name, key)
	}
	if strings.HasPrefix(object, ReservedPrefix) {
		return "", apierr.New(apierr.InvalidArgument,
			"cannot register shared memory region '%s' with key '%s' as the key contains the reserved prefix '%s'", name, key, ReservedPrefix)
	}
	if strings.HasPrefix(object, StubPrefix) {
		return "", apierr.New(apierr.InvalidArgument,
			"cannot register shared memory region '%s' with key '%s' as the key contains the reserved prefix '%s' (vigil's own shared memory)", name, key, StubPrefix)
	}
	if strings.Contains(object, "/") || object == "." || object == ".." {
		return "", apierr.New(apierr.InvalidArgument,
			"cannot register shared memory region '%s' - invalid shm key '%s': a key is one name, optionally after leading '/', as shm_open takes it", name, key)
	}
	return object, nil
}
