package model

import (
	"context"
	"sort"
	"strconv"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/health"
	"github.com/vigilhq/vigil/internal/inferencepb"
	"github.com/vigilhq/vigil/internal/modelconfig"
	"github.com/vigilhq/vigil/internal/repository"
)

// specFor returns the configuration of a model version the server knows.
// Metadata and configuration stay available while a loaded model is not
// ready, so that clients can see what they are waiting for.
func (m *Manager) specFor(name, ver string) (*modelconfig.Model, error) {
	if err := apierr.CheckVersionString(ver); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	e := m.models[name]
	if e == nil || e.spec == nil {
		return nil, apierr.UnknownModel(name)
	}
	if ver != "" {
		if _, ok := e.versions[ver]; !ok {
			return nil, apierr.UnknownVersion(name, ver)
		}
	}
	return e.spec, nil
}

// Metadata is a model's metadata.
func (m *Manager) Metadata(name, ver string) (*Metadata, error) {
	spec, err := m.specFor(name, ver)
	if err != nil {
		return nil, err
	}
	cfg := spec.Config
	md := &Metadata{Name: spec.Name, Platform: "python"}
	if spec.IsEnsemble() {
		md.Platform = modelconfig.EnsemblePlatform
	}
	for _, n := range m.loadedVersions(name) {
		md.Versions = append(md.Versions, strconv.FormatInt(n, 10))
	}
	batching := cfg.GetMaxBatchSize() > 0
	for _, in := range cfg.GetInput() {
		md.Inputs = append(md.Inputs, TensorMetadata{Name: in.GetName(), Datatype: modelconfig.DatatypeOf(in.GetDataType()), Shape: withBatch(in.GetDims(), batching)})
	}
	for _, out := range cfg.GetOutput() {
		md.Outputs = append(md.Outputs, TensorMetadata{Name: out.GetName(), Datatype: modelconfig.DatatypeOf(out.GetDataType()), Shape: withBatch(out.GetDims(), batching)})
	}
	return md, nil
}

func withBatch(dims []int64, batching bool) []int64 {
	out := make([]int64, 0, len(dims)+1)
	if batching {
		out = append(out, -1)
	}
	return append(out, dims...)
}

func (m *Manager) loadedVersions(name string) []int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []int64
	if e := m.models[name]; e != nil {
		for _, v := range e.versions {
			out = append(out, v.number)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Config is a model's configuration as loaded, defaults filled in.
func (m *Manager) Config(name, ver string) (*inferencepb.ModelConfig, error) {
	spec, err := m.specFor(name, ver)
	if err != nil {
		return nil, err
	}
	return spec.Config, nil
}

// ConfigJSON is a model's configuration as Triton's JSON.
func (m *Manager) ConfigJSON(name, ver string) ([]byte, error) {
	cfg, err := m.Config(name, ver)
	if err != nil {
		return nil, err
	}
	return modelconfig.ToJSON(cfg)
}

// Stats are the statistics of one model version, of every version of a
// model (empty version), or of every model (empty name).
func (m *Manager) Stats(name, ver string) ([]Stats, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if name != "" {
		if e := m.models[name]; e == nil || e.spec == nil {
			return nil, apierr.UnknownModel(name)
		}
	}
	var out []Stats
	for n, e := range m.models {
		if name != "" && n != name {
			continue
		}
		for vs, v := range e.versions {
			if ver != "" && vs != ver {
				continue
			}
			out = append(out, Stats{
				Name: n, Version: vs,
				Counters:     v.stats.Snapshot(),
				Pending:      v.pending(),
				LoadDuration: v.loadDuration,
			})
		}
	}
	if name != "" && ver != "" && len(out) == 0 {
		return nil, apierr.UnknownVersion(name, ver)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Version < out[j].Version
	})
	return out, nil
}

// Index lists the repository's models with their runtime state: what the
// health engine sees, never only how the load went.
func (m *Manager) Index(_ context.Context, readyOnly bool) []IndexEntry {
	snap := m.cfg.Health.Snapshot()
	known := map[string]bool{}
	var out []IndexEntry
	for _, mh := range snap.Models {
		known[mh.Name] = true
		// The version's state as the health engine derives it: a loaded
		// version with too few routable instances is UNAVAILABLE, saying
		// why. The index reports state, not traffic: while the server
		// drains, a loaded version is still READY here.
		state, reason := string(mh.State), mh.Reason
		if readyOnly && state != string(health.ModelStateReady) {
			continue
		}
		out = append(out, IndexEntry{Name: mh.Name, Version: mh.Version, State: state, Reason: reason})
	}
	if !readyOnly {
		names, _ := repository.Scan(m.cfg.RepoDir)
		for _, n := range names {
			if !known[n] {
				out = append(out, IndexEntry{Name: n})
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
