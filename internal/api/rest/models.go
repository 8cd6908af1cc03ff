package rest

import (
	"net/http"
	"time"

	"github.com/vigilhq/vigil/internal/model"
)

// Server metadata, model metadata, model configuration and Triton's
// statistics extension.

type serverMetadataBody struct {
	Name       string   `json:"name"`
	Version    string   `json:"version"`
	Extensions []string `json:"extensions"`
}

type tensorMetadataBody struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

type modelMetadataBody struct {
	Name     string               `json:"name"`
	Versions []string             `json:"versions"`
	Platform string               `json:"platform"`
	Inputs   []tensorMetadataBody `json:"inputs"`
	Outputs  []tensorMetadataBody `json:"outputs"`
}

func (s *server) serverMetadata(w http.ResponseWriter, r *http.Request) {
	ext := s.cfg.Extensions
	if ext == nil {
		ext = []string{}
	}
	writeJSON(w, http.StatusOK, serverMetadataBody{Name: s.cfg.ServerName, Version: s.cfg.ServerVersion, Extensions: ext})
}

func (s *server) modelMetadata(w http.ResponseWriter, r *http.Request) {
	md, err := s.models.Metadata(r.PathValue("model"), r.PathValue("version"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	versions := md.Versions
	if versions == nil {
		versions = []string{}
	}
	writeJSON(w, http.StatusOK, modelMetadataBody{
		Name: md.Name, Versions: versions, Platform: md.Platform,
		Inputs: tensorMetadata(md.Inputs), Outputs: tensorMetadata(md.Outputs),
	})
}

func tensorMetadata(ts []model.TensorMetadata) []tensorMetadataBody {
	out := make([]tensorMetadataBody, 0, len(ts))
	for _, t := range ts {
		shape := t.Shape
		if shape == nil {
			shape = []int64{}
		}
		out = append(out, tensorMetadataBody{Name: t.Name, Datatype: string(t.Datatype), Shape: shape})
	}
	return out
}

// modelConfig returns the model configuration JSON exactly as the model
// manager produced it (Triton's ModelConfig JSON).
func (s *server) modelConfig(w http.ResponseWriter, r *http.Request) {
	b, err := s.models.ConfigJSON(r.PathValue("model"), r.PathValue("version"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeRawJSON(w, http.StatusOK, b)
}

// The statistics extension's JSON (Triton's $stats_model_response). Every
// count and duration is a non-negative integer, as Triton clients read them
// as uint64 (perf_analyzer uses GetUint64). cache_hit and cache_miss are
// always zero: vigil has no response cache. batch_stats has one entry per
// batch size executed, ascending.

type statsBody struct {
	ModelStats []modelStatBody `json:"model_stats"`
}

type modelStatBody struct {
	Name           string             `json:"name"`
	Version        string             `json:"version"`
	LastInference  uint64             `json:"last_inference"`
	InferenceCount uint64             `json:"inference_count"`
	ExecutionCount uint64             `json:"execution_count"`
	InferenceStats inferenceStatsBody `json:"inference_stats"`
	BatchStats     []batchStatBody    `json:"batch_stats"`
}

type batchStatBody struct {
	BatchSize     uint64       `json:"batch_size"`
	ComputeInput  durationBody `json:"compute_input"`
	ComputeInfer  durationBody `json:"compute_infer"`
	ComputeOutput durationBody `json:"compute_output"`
}

type inferenceStatsBody struct {
	Success       durationBody `json:"success"`
	Fail          durationBody `json:"fail"`
	Queue         durationBody `json:"queue"`
	ComputeInput  durationBody `json:"compute_input"`
	ComputeInfer  durationBody `json:"compute_infer"`
	ComputeOutput durationBody `json:"compute_output"`
	CacheHit      durationBody `json:"cache_hit"`
	CacheMiss     durationBody `json:"cache_miss"`
}

type durationBody struct {
	Count uint64 `json:"count"`
	NS    uint64 `json:"ns"`
}

func (s *server) modelStats(w http.ResponseWriter, r *http.Request) {
	stats, err := s.models.Stats(r.PathValue("model"), r.PathValue("version"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, statsJSON(stats))
}

func statsJSON(stats []model.Stats) statsBody {
	out := statsBody{ModelStats: make([]modelStatBody, 0, len(stats))}
	for _, st := range stats {
		batches := make([]batchStatBody, 0, len(st.Batches))
		for _, b := range st.Batches {
			batches = append(batches, batchStatBody{BatchSize: nonNegative(int64(b.Size)),
				ComputeInput: durationJSON(b.ComputeInput), ComputeInfer: durationJSON(b.ComputeInfer), ComputeOutput: durationJSON(b.ComputeOutput)})
		}
		out.ModelStats = append(out.ModelStats, modelStatBody{
			Name:           st.Name,
			Version:        st.Version,
			LastInference:  epochMillis(st.LastInference),
			InferenceCount: nonNegative(st.InferenceCount),
			ExecutionCount: nonNegative(st.ExecutionCount),
			InferenceStats: inferenceStatsBody{
				Success:       durationJSON(st.Success),
				Fail:          durationJSON(st.Fail),
				Queue:         durationJSON(st.Queue),
				ComputeInput:  durationJSON(st.ComputeInput),
				ComputeInfer:  durationJSON(st.ComputeInfer),
				ComputeOutput: durationJSON(st.ComputeOutput),
			},
			BatchStats: batches,
		})
	}
	return out
}

func durationJSON(d model.Duration) durationBody {
	return durationBody{Count: nonNegative(d.Count), NS: nonNegative(d.Total.Nanoseconds())}
}

func epochMillis(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return nonNegative(t.UnixMilli())
}

func nonNegative(n int64) uint64 {
	if n < 0 {
		return 0
	}
	return uint64(n)
}
