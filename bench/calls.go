package main

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// measureCalls times models that call models, each next to its baseline in
// the same interleaved rounds, all over HTTP at concurrency 1:
//
//   - one BLS hop: bls_add_sub forwards each request to add_sub with
//     InferenceRequest.exec(), against add_sub called directly; the hop's
//     cost is the difference, compared with the raw IPC round trips (an
//     empty ping and an add_sub execute) timed in the same rounds, and
//     split into the forwarder's own execute round trip and the call;
//   - an ensemble: add_sub_chain runs three add_sub steps one after the
//     other, against three direct add_sub requests (the sum of its steps).
func measureCalls(ctx context.Context, s *vigilServer, o options, r *report, ipc ipcFigures) error {
	return measureCallsAgainst(ctx, s, nil, o, r, ipc)
}

// measureCallsAgainst is measureCalls, with base (when not nil, another
// vigil binary serving the same repository) timed in the same rounds: its
// direct and BLS requests are interleaved with s's, and the report gives
// s's hop against base's, for before/after figures (-calls-only
// -vigil-baseline BIN).
func measureCallsAgainst(ctx context.Context, s, base *vigilServer, o options, r *report, ipc ipcFigures) error {
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}, Timeout: 30 * time.Second}
	direct := httpCall(hc, "POST", s.http+"/v2/models/add_sub/infer", addSubJSON)
	bls := httpCall(hc, "POST", s.http+"/v2/models/bls_add_sub/infer", addSubJSON)
	chain := httpCall(hc, "POST", s.http+"/v2/models/add_sub_chain/infer", addSubJSON)
	calls := []call{direct, bls, chain, ipc.pingCall, ipc.execute}
	if base != nil {
		calls = append(calls, httpCall(hc, "POST", base.http+"/v2/models/add_sub/infer", addSubJSON),
			httpCall(hc, "POST", base.http+"/v2/models/bls_add_sub/infer", addSubJSON))
	}
	ds, err := interleaved(ctx, o.samples, calls...)
	if err != nil {
		return fmt.Errorf("calls between models: %w", err)
	}
	d, b, c, ping, exec := ds[0], ds[1], ds[2], ds[3], ds[4]
	hop := b.p50 - d.p50
	// The hop holds the forwarder's own execute round trip (its stub must
	// be reached and answer, as add_sub's is for a direct request; both run
	// one small numpy step, so an add_sub execute stands for it) and the
	// call: BLS_INFER, the callee's scheduling and round trip, BLS_RESPONSE.
	// The first is a round trip by construction, so the call is what a BLS
	// hop adds beyond any model of its own.
	call := hop - exec.p50
	r.add("HTTP infer add_sub, direct (baseline for calls)", d, "")
	r.add("HTTP infer bls_add_sub (one BLS hop to add_sub)", b, fmt.Sprintf("hop +%s = %.2f× ipc execute = the forwarder's own round trip + the call +%s (%.2f× ipc execute); %s",
		us(hop), float64(hop)/float64(exec.p50), us(call), float64(call)/float64(exec.p50),
		target(call <= exec.p50, "the call adds ≤ 1 ipc round trip (execute)")))
	sum := 3 * d.p50
	r.add("HTTP infer add_sub_chain (3-step ensemble)", c, fmt.Sprintf("%.2f× the sum of its 3 steps called directly (%s); +%s",
		float64(c.p50)/float64(sum), us(sum), us(c.p50-sum)))
	r.add("  ipc ping, same rounds", ping, "")
	r.add("  ipc execute add_sub, same rounds", exec, ratio(exec.p50, ping.p50))
	if base != nil {
		bd, bb := ds[5], ds[6]
		bhop := bb.p50 - bd.p50
		r.add("  vigil-base: HTTP infer add_sub, direct", bd, "")
		r.add("  vigil-base: HTTP infer bls_add_sub", bb, fmt.Sprintf("hop +%s = %.2f× ipc execute; this build's hop is %.2f× vigil-base's",
			us(bhop), float64(bhop)/float64(exec.p50), float64(hop)/float64(bhop)))
	}
	return nil
}
