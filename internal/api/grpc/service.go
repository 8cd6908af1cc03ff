package grpc

import (
	"context"
	"time"

	"google.golang.org/grpc/status"

	"github.com/vigilhq/vigil/internal/apierr"
	pb "github.com/vigilhq/vigil/internal/inferencepb"
	"github.com/vigilhq/vigil/internal/model"
)

// inferenceService implements GRPCInferenceService over a Server's Models
// and Health. It is a separate type so that the generated server methods do
// not become part of Server's API.
type inferenceService struct {
	pb.UnimplementedGRPCInferenceServiceServer
	s *Server
}

var _ pb.GRPCInferenceServiceServer = (*inferenceService)(nil)

// toStatus turns an error into a gRPC status through the one shared mapping.
func toStatus(err error) error {
	return status.Error(apierr.GRPCCode(err), err.Error())
}

// ServerLive answers OK with live=false when the server is not live, as the
// protocol asks; the reason is not part of the message.
func (svc *inferenceService) ServerLive(context.Context, *pb.ServerLiveRequest) (*pb.ServerLiveResponse, error) {
	live, _ := svc.s.snapshot().Live()
	return &pb.ServerLiveResponse{Live: live}, nil
}

// ServerReady answers OK with ready=false when the server is not ready
// (the snapshot's readiness, draining included).
func (svc *inferenceService) ServerReady(context.Context, *pb.ServerReadyRequest) (*pb.ServerReadyResponse, error) {
	ready, _ := svc.s.snapshot().Ready()
	return &pb.ServerReadyResponse{Ready: ready}, nil
}

// ModelReady answers OK with ready=false for a known model that is not
// ready and NOT_FOUND for a model or version the server does not know.
func (svc *inferenceService) ModelReady(_ context.Context, in *pb.ModelReadyRequest) (*pb.ModelReadyResponse, error) {
	if in.GetName() == "" {
		return nil, toStatus(apierr.New(apierr.InvalidArgument, "model name is required"))
	}
	if err := apierr.CheckVersionString(in.GetVersion()); err != nil {
		return nil, toStatus(err)
	}
	ready, _, found := svc.s.snapshot().ModelReady(in.GetName(), in.GetVersion())
	if !found {
		if in.GetVersion() != "" {
			return nil, toStatus(apierr.UnknownVersion(in.GetName(), in.GetVersion()))
		}
		return nil, toStatus(apierr.UnknownModel(in.GetName()))
	}
	return &pb.ModelReadyResponse{Ready: ready}, nil
}

// ServerMetadata reports the configured name, version and extensions.
func (svc *inferenceService) ServerMetadata(context.Context, *pb.ServerMetadataRequest) (*pb.ServerMetadataResponse, error) {
	return &pb.ServerMetadataResponse{
		Name:       svc.s.cfg.ServerName,
		Version:    svc.s.cfg.ServerVersion,
		Extensions: svc.s.cfg.Extensions,
	}, nil
}

// ModelMetadata reports a model's versions, platform and tensors.
func (svc *inferenceService) ModelMetadata(_ context.Context, in *pb.ModelMetadataRequest) (*pb.ModelMetadataResponse, error) {
	if in.GetName() == "" {
		return nil, toStatus(apierr.New(apierr.InvalidArgument, "model name is required"))
	}
	md, err := svc.s.models.Metadata(in.GetName(), in.GetVersion())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.ModelMetadataResponse{
		Name:     md.Name,
		Versions: md.Versions,
		Platform: md.Platform,
		Inputs:   tensorMetadata(md.Inputs),
		Outputs:  tensorMetadata(md.Outputs),
	}, nil
}

func tensorMetadata(ts []model.TensorMetadata) []*pb.ModelMetadataResponse_TensorMetadata {
	out := make([]*pb.ModelMetadataResponse_TensorMetadata, 0, len(ts))
	for _, t := range ts {
		out = append(out, &pb.ModelMetadataResponse_TensorMetadata{
			Name:     t.Name,
			Datatype: string(t.Datatype),
			Shape:    t.Shape,
		})
	}
	return out
}

// ModelConfig returns the model's configuration as Triton's ModelConfig.
func (svc *inferenceService) ModelConfig(_ context.Context, in *pb.ModelConfigRequest) (*pb.ModelConfigResponse, error) {
	if in.GetName() == "" {
		return nil, toStatus(apierr.New(apierr.InvalidArgument, "model name is required"))
	}
	cfg, err := svc.s.models.Config(in.GetName(), in.GetVersion())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.ModelConfigResponse{Config: cfg}, nil
}

// ModelStatistics returns Triton's statistics for one version, every
// version of a model, or every model.
func (svc *inferenceService) ModelStatistics(_ context.Context, in *pb.ModelStatisticsRequest) (*pb.ModelStatisticsResponse, error) {
	stats, err := svc.s.models.Stats(in.GetName(), in.GetVersion())
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.ModelStatisticsResponse{ModelStats: make([]*pb.ModelStatistics, 0, len(stats))}
	for _, st := range stats {
		out.ModelStats = append(out.ModelStats, statsToProto(st))
	}
	return out, nil
}

func statsToProto(st model.Stats) *pb.ModelStatistics {
	var last uint64
	if !st.LastInference.IsZero() {
		last = uint64(st.LastInference.UnixMilli())
	}
	batches := make([]*pb.InferBatchStatistics, 0, len(st.Batches))
	for _, b := range st.Batches {
		batches = append(batches, &pb.InferBatchStatistics{BatchSize: uint64(b.Size),
			ComputeInput: durationToProto(b.ComputeInput), ComputeInfer: durationToProto(b.ComputeInfer), ComputeOutput: durationToProto(b.ComputeOutput)})
	}
	return &pb.ModelStatistics{
		BatchStats:     batches,
		Name:           st.Name,
		Version:        st.Version,
		LastInference:  last,
		InferenceCount: uint64(st.InferenceCount),
		ExecutionCount: uint64(st.ExecutionCount),
		InferenceStats: &pb.InferStatistics{
			Success:       durationToProto(st.Success),
			Fail:          durationToProto(st.Fail),
			Queue:         durationToProto(st.Queue),
			ComputeInput:  durationToProto(st.ComputeInput),
			ComputeInfer:  durationToProto(st.ComputeInfer),
			ComputeOutput: durationToProto(st.ComputeOutput),
			// vigil has no response cache; Triton reports zeros then too.
			CacheHit:  &pb.StatisticDuration{},
			CacheMiss: &pb.StatisticDuration{},
		},
	}
}

func durationToProto(d model.Duration) *pb.StatisticDuration {
	return &pb.StatisticDuration{Count: uint64(d.Count), Ns: uint64(d.Total / time.Nanosecond)}
}

// RepositoryIndex lists the repository's model versions with their runtime
// state. vigil serves one repository, so repository_name is not consulted.
// Like every admin method it needs the admin token (admin.go).
func (svc *inferenceService) RepositoryIndex(ctx context.Context, in *pb.RepositoryIndexRequest) (*pb.RepositoryIndexResponse, error) {
	entries := svc.s.models.Index(ctx, in.GetReady())
	out := &pb.RepositoryIndexResponse{Models: make([]*pb.RepositoryIndexResponse_ModelIndex, 0, len(entries))}
	for _, e := range entries {
		reason := e.Reason
		if svc.s.cfg.HideReasons && svc.s.cfg.AdminToken == "" {
			// Without a token the index is as public as the health
			// service, and withholds reasons as it does.
			reason = ""
		}
		out.Models = append(out.Models, &pb.RepositoryIndexResponse_ModelIndex{
			Name:    e.Name,
			Version: e.Version,
			State:   e.State,
			Reason:  reason,
		})
	}
	return out, nil
}

// RepositoryModelLoad loads or reloads a model (explicit mode).
func (svc *inferenceService) RepositoryModelLoad(ctx context.Context, in *pb.RepositoryModelLoadRequest) (*pb.RepositoryModelLoadResponse, error) {
	if in.GetModelName() == "" {
		return nil, toStatus(apierr.New(apierr.InvalidArgument, "model_name is required"))
	}
	if err := svc.s.models.Load(ctx, in.GetModelName(), repoParamsFromProto(in.GetParameters())); err != nil {
		svc.s.log.Debug("grpc repository load failed", logKeyModel, in.GetModelName(), logKeyErr, err)
		return nil, toStatus(err)
	}
	return &pb.RepositoryModelLoadResponse{}, nil
}

// RepositoryModelUnload unloads a model (explicit mode).
func (svc *inferenceService) RepositoryModelUnload(ctx context.Context, in *pb.RepositoryModelUnloadRequest) (*pb.RepositoryModelUnloadResponse, error) {
	if in.GetModelName() == "" {
		return nil, toStatus(apierr.New(apierr.InvalidArgument, "model_name is required"))
	}
	if err := svc.s.models.Unload(ctx, in.GetModelName(), repoParamsFromProto(in.GetParameters())); err != nil {
		svc.s.log.Debug("grpc repository unload failed", logKeyModel, in.GetModelName(), logKeyErr, err)
		return nil, toStatus(err)
	}
	return &pb.RepositoryModelUnloadResponse{}, nil
}
