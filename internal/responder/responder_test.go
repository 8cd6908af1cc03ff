package responder

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/health"
)

// fill sets every field reachable from v to a value that is not its zero
// value, so that a field the JSON stream would lose shows in a round trip.
func fill(t *testing.T, v reflect.Value) {
	t.Helper()
	if v.Type() == reflect.TypeOf(time.Time{}) {
		v.Set(reflect.ValueOf(time.Date(2026, 12, 3, 8, 0, 0, 123, time.UTC)))
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if !v.Type().Field(i).IsExported() {
				t.Fatalf("%s.%s is unexported: the responder's stream would lose it", v.Type(), v.Type().Field(i).Name)
			}
			fill(t, v.Field(i))
		}
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(t, v.Elem())
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(t, v.Index(0))
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(t, k)
		fill(t, e)
		v.SetMapIndex(k, e)
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(1)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(1.5)
	default:
		t.Fatalf("fill: no value for %s", v.Type())
	}
}

// The child answers from what crosses the stream: every field of a
// snapshot must arrive as it left.
func TestSnapshotCrossesTheStreamWhole(t *testing.T) {
	var want health.Snapshot
	fill(t, reflect.ValueOf(&want).Elem())
	want.Silent = 0 // the child's own field; the server never sets it
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(&want); err != nil {
		t.Fatal(err)
	}
	last := newLast(time.Hour, nil)
	if err := last.Follow(&buf); err != nil {
		t.Fatal(err)
	}
	if got := last.Snapshot(); !reflect.DeepEqual(got, &want) {
		t.Errorf("snapshot changed on the way:\n got %+v\nwant %+v", got, &want)
	}
}

func TestLastFailsPingOnceTheServerIsSilent(t *testing.T) {
	now := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	last := newLast(3*time.Second, func() time.Time { return now })
	if s := last.Snapshot(); s.Started || s.Silent != 0 {
		t.Fatalf("before any snapshot: %+v, want an empty one (live, not started)", s)
	}
	if err := last.Follow(strings.NewReader(`{"Started":true}` + "\n")); err != nil {
		t.Fatal(err)
	}
	now = now.Add(3 * time.Second)
	if s := last.Snapshot(); !s.Started || s.Silent != 0 {
		t.Fatalf("at the bound: %+v, want the snapshot as received", s)
	}
	now = now.Add(time.Millisecond)
	s := last.Snapshot()
	if s.Silent != 3001*time.Millisecond {
		t.Fatalf("past the bound: Silent %s, want 3.001s", s.Silent)
	}
	for _, p := range []health.Probe{health.ProbeLive, health.ProbeReady} {
		c := s.Checks(p)[0]
		if c.Name != "ping" || c.OK || !strings.Contains(c.Reason, "reported no health for 3.001s") {
			t.Errorf("%s: first check %+v, want a failing ping naming the silence", p, c)
		}
	}
}

func TestFollowEndsWithTheStream(t *testing.T) {
	last := newLast(time.Second, nil)
	if err := last.Follow(strings.NewReader("")); err != nil {
		t.Errorf("Follow at a clean end: %v, want nil", err)
	}
	if err := last.Follow(strings.NewReader(`{"Started":tr`)); err == nil {
		t.Error("Follow of a cut document: nil, want an error")
	}
}

// fakeSource is an engine whose snapshot the test sets.
type fakeSource struct {
	mu      sync.Mutex
	snap    *health.Snapshot
	changed chan struct{}
}

func (f *fakeSource) Snapshot() *health.Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.snap
}

func (f *fakeSource) Subscribe() (<-chan struct{}, func()) { return f.changed, func() {} }

func (f *fakeSource) set(s *health.Snapshot) {
	f.mu.Lock()
	f.snap = s
	f.mu.Unlock()
	f.changed <- struct{}{}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 5s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Publish and Serve over a pipe, as the server and the child use them over
// their socket: the child answers what the engine publishes, a change
// arrives without waiting for the beat, and the end of the stream ends
// the child.
func TestChildAnswersWhatTheServerPublishes(t *testing.T) {
	src := &fakeSource{snap: &health.Snapshot{Loading: "loading 0/1: m"}, changed: make(chan struct{})}
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	published := make(chan error, 1)
	go func() { published <- Publish(ctx, pw, src, time.Hour) }()

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- Serve(pr, lis, ChildConfig{StaleAfter: time.Hour}) }()
	url := "http://" + lis.Addr().String()

	eventually(t, "startupz names the loading step", func() bool {
		code, body := get(t, url+"/startupz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "loading 0/1: m")
	})
	src.set(&health.Snapshot{Started: true})
	eventually(t, "readyz ok after the change", func() bool {
		code, body := get(t, url+"/readyz")
		return code == http.StatusOK && body == "ok"
	})
	if code, _ := get(t, url+"/v2/models/m/infer"); code != http.StatusNotFound {
		t.Errorf("inference route on the probe port: %d, want 404", code)
	}

	cancel()
	if err := <-published; err != nil {
		t.Errorf("Publish: %v", err)
	}
	pw.Close()
	if err := <-served; err != nil {
		t.Errorf("Serve at the stream's end: %v, want nil", err)
	}
}
