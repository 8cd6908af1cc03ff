package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	gogrpc "google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	grpcapi "github.com/vigilhq/vigil/internal/api/grpc"
	"github.com/vigilhq/vigil/internal/api/rest"
	"github.com/vigilhq/vigil/internal/health"
	pb "github.com/vigilhq/vigil/internal/inferencepb"
	"github.com/vigilhq/vigil/internal/model"
)

// Every surface answers each question from the one snapshot: server
// readiness, liveness and start-up, and each model's readiness, through
// load, instance death, a min_ready_instances edge, a reload and the drain.
// REST (OIP and probes), gRPC OIP, grpc.health.v1, /metrics and the
// repository index are sampled after each step and must agree with the
// snapshot's answer (grpc.health follows the snapshot through a
// subscription, so it is given a moment to catch up).
func TestEverySurfaceGivesOneAnswer(t *testing.T) {
	reg := prometheus.NewRegistry()
	eng := health.NewEngine(health.EngineConfig{Strict: true, Escalate: true, Registerer: reg, WatchdogInterval: -1})
	eng.Start(context.Background())
	defer eng.Close()
	mgr := model.New(model.Config{RepoDir: t.TempDir(), Mode: model.ModeExplicit, Defaults: health.DefaultPolicy(),
		Events: eng, Health: eng, Logger: slog.New(slog.DiscardHandler)})
	restCfg := rest.Config{ServerName: Name, Metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{})}
	hs := httptest.NewServer(rest.NewHandler(mgr, eng, restCfg))
	defer hs.Close()
	gs := grpcapi.NewServer(mgr, eng, grpcapi.Config{ServerName: Name})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	defer gs.GracefulStop(context.Background())
	conn, err := gogrpc.NewClient(lis.Addr().String(), gogrpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	oip, hc := pb.NewGRPCInferenceServiceClient(conn), healthpb.NewHealthClient(conn)

	post := func(evs ...health.Event) {
		for _, ev := range evs {
			eng.Post(ev)
		}
		_ = eng.Sync(context.Background())
	}
	key := func(m, v, in string) health.InstanceKey {
		return health.InstanceKey{Model: m, Version: v, Instance: in}
	}
	pol := health.DefaultPolicy()
	pol2 := pol
	pol2.MinReadyInstances = 2
	loading := func(m, v string, p health.Policy, expected bool, ins ...string) health.Event {
		return health.Event{Kind: health.ModelLoading, Instance: key(m, v, ""), Instances: ins, Policy: &p, Expected: expected}
	}
	up := func(m, v, in string, pid int) []health.Event {
		return []health.Event{{Kind: health.InstanceSpawned, Instance: key(m, v, in), PID: pid}, {Kind: health.InstanceInitialized, Instance: key(m, v, in), PID: pid}}
	}
	died := func(m, v, in string, pid int) health.Event {
		return health.Event{Kind: health.InstanceExited, Instance: key(m, v, in), PID: pid, Signal: "SIGKILL"}
	}
	loaded := func(m, v string) health.Event { return health.Event{Kind: health.ModelLoaded, Instance: key(m, v, "")} }

	steps := []struct {
		name string
		evs  []health.Event
	}{
		{"loading", []health.Event{{Kind: health.StartupPlanned, Instances: []string{"m", "n"}},
			loading("m", "1", pol2, true, "m_0", "m_1"), loading("n", "1", pol, true, "n_0")}},
		{"one of two initialized (min_ready 2)", up("m", "1", "m_0", 10)},
		{"all loaded", append(append(up("m", "1", "m_1", 11), up("n", "1", "n_0", 20)...),
			loaded("m", "1"), loaded("n", "1"), health.Event{Kind: health.StartupComplete})},
		{"an instance dies under min_ready", []health.Event{died("m", "1", "m_1", 11)}},
		{"it is back", up("m", "1", "m_1", 12)},
		{"every sequence slot is busy", []health.Event{
			{Kind: health.SequencesChanged, Instance: key("m", "1", "m_0"), Open: 4, Slots: 4},
			{Kind: health.SequencesChanged, Instance: key("m", "1", "m_1"), Open: 4, Slots: 4}}},
		{"a reload's new version loads", append([]health.Event{loading("n", "2", pol, false, "n_0-r2")}, up("n", "2", "n_0-r2", 30)...)},
		{"the new version serves", []health.Event{loaded("n", "2")}},
		{"the new version's instance dies", []health.Event{died("n", "2", "n_0-r2", 30)}},
		{"the old version unloads", []health.Event{{Kind: health.ModelUnloading, Instance: key("n", "1", "")}, {Kind: health.ModelUnloaded, Instance: key("n", "1", ""), Reason: "unloaded"}}},
		{"draining", []health.Event{{Kind: health.Draining}}},
	}
	for _, st := range steps {
		post(st.evs...)
		snap := eng.Snapshot()
		ready, _ := snap.Ready()
		live, _ := snap.Live()
		want := map[string]bool{"ready": ready, "live": live, "startup": snap.Started}
		for _, m := range []string{"m", "n"} {
			r, _, _ := snap.ModelReady(m, "")
			want["model/"+m] = r
		}
		if st.name == "every sequence slot is busy" && (!want["model/m"] || !want["ready"]) {
			t.Fatalf("step %q: busy is not unhealthy, but the snapshot says %v", st.name, want)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			got, diffs := sampleSurfaces(t, hs.URL, oip, hc, mgr, snap, want)
			if len(diffs) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("step %q: surfaces disagree with the snapshot %v:\n%s\n(answers %v)", st.name, want, strings.Join(diffs, "\n"), got)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// sampleSurfaces asks every surface and lists those that disagree with want.
func sampleSurfaces(t *testing.T, base string, oip pb.GRPCInferenceServiceClient, hc healthpb.HealthClient,
	mgr *model.Manager, snap *health.Snapshot, want map[string]bool) (map[string]bool, []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got := map[string]bool{}
	var diffs []string
	check := func(question, surface string, answer bool) {
		got[surface] = answer
		if answer != want[question] {
			diffs = append(diffs, surface+" says "+map[bool]string{true: "yes", false: "no"}[answer]+" to "+question)
		}
	}
	status := func(path string) bool {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == 200
	}
	grpcHealth := func(svc string) bool {
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		return err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING
	}
	metrics := func() string {
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}()
	gauge := func(line string) bool { return strings.Contains(metrics, line+" 1\n") }

	check("ready", "GET /v2/health/ready", status("/v2/health/ready"))
	check("ready", "GET /readyz", status("/readyz"))
	sr, err := oip.ServerReady(ctx, &pb.ServerReadyRequest{})
	check("ready", "gRPC ServerReady", err == nil && sr.GetReady())
	check("ready", `grpc.health ""`, grpcHealth(""))
	check("ready", "grpc.health readiness", grpcHealth("readiness"))
	check("ready", "vigil_server_ready", gauge("vigil_server_ready"))

	check("live", "GET /v2/health/live", status("/v2/health/live"))
	check("live", "GET /livez", status("/livez"))
	sl, err := oip.ServerLive(ctx, &pb.ServerLiveRequest{})
	check("live", "gRPC ServerLive", err == nil && sl.GetLive())
	check("live", "grpc.health liveness", grpcHealth("liveness"))
	check("live", "vigil_server_live", gauge("vigil_server_live"))

	check("startup", "GET /startupz", status("/startupz"))
	check("startup", "grpc.health startup", grpcHealth("startup"))

	index := mgr.Index(ctx, false)
	for _, m := range []string{"m", "n"} {
		q := "model/" + m
		check(q, "GET /v2/models/"+m+"/ready", status("/v2/models/"+m+"/ready"))
		mr, err := oip.ModelReady(ctx, &pb.ModelReadyRequest{Name: m})
		check(q, "gRPC ModelReady "+m, err == nil && mr.GetReady())
		check(q, "grpc.health "+q, grpcHealth(q))
		mh, _ := snap.Model(m, "")
		check(q, "vigil_model_ready "+m, gauge(`vigil_model_ready{model="`+m+`",version="`+mh.Version+`"}`))
		if !snap.Draining {
			// The index reports state, not traffic: outside the drain a
			// READY version is exactly a ready one.
			for _, e := range index {
				if e.Name == m && e.Version == mh.Version {
					check(q, "repository index "+m, e.State == string(health.ModelStateReady))
				}
			}
		}
	}
	return got, diffs
}
