package instance

import (
	"log/slog"
	"sync"

	"github.com/vigilhq/vigil/internal/ipc"
)

// Stub is a bare stub process with no supervision, for tools that talk to
// a stub directly (the benchmark measures the IPC round trip with it).
type Stub struct {
	p  *process
	wg sync.WaitGroup
}

// StartStub starts a stub process.
func StartStub(rt Runtime, log *slog.Logger) (*Stub, error) {
	s := &Stub{}
	p, err := startProcess(rt, log, &s.wg, nil)
	if err != nil {
		return nil, err
	}
	s.p = p
	return s, nil
}

// Client is the stub's control connection.
func (s *Stub) Client() *ipc.Client { return s.p.client }

// Close kills the stub and waits for it.
func (s *Stub) Close() {
	s.p.kill()
	s.wg.Wait()
}
