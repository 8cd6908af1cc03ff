package ipc_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/ipc"
)

// blockingBatch is a batch of the blocking model: its execute writes
// started, then waits for release to exist.
func blockingBatch(t *testing.T, s *stub, id, started, release string) *ipc.Batch {
	t.Helper()
	b, err := s.NewBatch([]*inference.Request{{ID: id, Parameters: map[string]any{"started": started, "release": release}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sentBehind starts the blocking model and sends a, then b behind it;
// each writes the file of its name in dir when it begins and returns once
// its release file exists ("" returns at once).
func sentBehind(t *testing.T, releaseA, releaseB string) (s *stub, dir string, a, b *ipc.Batch) {
	t.Helper()
	s, _ = startModel(t, "blocking")
	dir = t.TempDir()
	rel := func(name string) string {
		if name == "" {
			return ""
		}
		return filepath.Join(dir, name)
	}
	a = blockingBatch(t, s, "a", filepath.Join(dir, "a"), rel(releaseA))
	b = blockingBatch(t, s, "b", filepath.Join(dir, "b"), rel(releaseB))
	if err := a.Send(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := b.SendAfter(ctxT(t), a); err != nil {
		t.Fatal(err)
	}
	return s, dir, a, b
}

func touch(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// A batch sent behind a running one begins once that one is answered,
// and its reply comes as any other.
func TestBatchSentBehindBeginsWhenTheOneAheadIsAnswered(t *testing.T) {
	t.Parallel()
	_, dir, a, b := sentBehind(t, "release", "release")
	release := filepath.Join(dir, "release")
	waitFile(t, filepath.Join(dir, "a"))
	if b.Begun() {
		t.Fatal("Begun before the batch ahead was answered")
	}
	touch(t, release)
	ra, err := a.Wait(ctxT(t), time.Time{})
	if err != nil || ra[0].Response.ID != "a" {
		t.Fatalf("a = %+v, %v", ra, err)
	}
	if !b.Begun() {
		t.Fatal("not Begun once the batch ahead was answered")
	}
	rb, err := b.Wait(ctxT(t), time.Now())
	if err != nil || rb[0].Response.ID != "b" {
		t.Fatalf("b = %+v, %v", rb, err)
	}
}

// A batch withdrawn while the one ahead runs never runs, gets no reply,
// and leaves the connection as it was.
func TestWithdrawnBatchNeverRuns(t *testing.T) {
	t.Parallel()
	s, dir, a, b := sentBehind(t, "release", "release")
	release := filepath.Join(dir, "release")
	waitFile(t, filepath.Join(dir, "a"))
	withdrawn, err := b.Withdraw(ctxT(t)) // answered while a runs
	if err != nil || !withdrawn {
		t.Fatalf("Withdraw = %v, %v; want true", withdrawn, err)
	}
	touch(t, release)
	if _, err := a.Wait(ctxT(t), time.Time{}); err != nil {
		t.Fatal(err)
	}
	// The next batch runs and is answered: b's place is not taken by it.
	results, err := s.Execute(ctxT(t), []*inference.Request{{ID: "next", Parameters: map[string]any{"started": filepath.Join(dir, "next")}}})
	if err != nil || results[0].Response.ID != "next" {
		t.Fatalf("next = %+v, %v", results, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "b")); !os.IsNotExist(err) {
		t.Fatalf("the withdrawn batch ran (stat: %v)", err)
	}
}

// Withdrawing a batch that has begun fails, and its reply still comes.
func TestBegunBatchCannotBeWithdrawn(t *testing.T) {
	t.Parallel()
	_, dir, a, b := sentBehind(t, "", "release")
	waitFile(t, filepath.Join(dir, "b"))
	withdrawn, err := b.Withdraw(ctxT(t))
	if err != nil || withdrawn {
		t.Fatalf("Withdraw of a running batch = %v, %v; want false", withdrawn, err)
	}
	touch(t, filepath.Join(dir, "release"))
	if _, err := a.Wait(ctxT(t), time.Time{}); err != nil {
		t.Fatal(err)
	}
	if rb, err := b.Wait(ctxT(t), time.Time{}); err != nil || rb[0].Response.ID != "b" {
		t.Fatalf("b = %+v, %v", rb, err)
	}
}

// When the stub dies under the batch ahead, the one behind it has not
// begun, and says so once the connection has ended.
func TestBatchBehindADeadStubHasNotBegun(t *testing.T) {
	t.Parallel()
	s, dir, a, b := sentBehind(t, "never", "never")
	waitFile(t, filepath.Join(dir, "a"))
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Wait(ctxT(t), time.Time{}); err == nil {
		t.Fatal("b was answered by a dead stub")
	}
	if b.Begun() {
		t.Fatal("Begun for a batch behind one the stub never answered")
	}
	if _, err := a.Wait(ctxT(t), time.Time{}); err == nil {
		t.Fatal("a was answered by a dead stub")
	}
}
