package grpc

import (
	"context"

	"github.com/vigilhq/vigil/internal/apierr"
	pb "github.com/vigilhq/vigil/internal/inferencepb"
	"github.com/vigilhq/vigil/internal/sharedmemory"
)

// SharedMemory is the system shared memory registry the shared memory RPCs
// drive (internal/sharedmemory.Registry).
type SharedMemory interface {
	Enabled() bool
	Register(name, key string, offset, byteSize uint64) error
	Unregister(name string) error
	Status(name string) ([]sharedmemory.Status, error)
}

// cudaUnsupported is the answer to a CUDA shared memory registration.
const cudaUnsupported = "CUDA shared memory is not supported: vigil serves CPU models; use system shared memory (SystemSharedMemoryRegister)"

// SystemSharedMemoryStatus reports one region, or every region when name
// is empty, keyed by name.
func (svc *inferenceService) SystemSharedMemoryStatus(_ context.Context, in *pb.SystemSharedMemoryStatusRequest) (*pb.SystemSharedMemoryStatusResponse, error) {
	st, err := svc.s.cfg.SharedMemory.Status(in.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.SystemSharedMemoryStatusResponse{Regions: make(map[string]*pb.SystemSharedMemoryStatusResponse_RegionStatus, len(st))}
	for _, r := range st {
		out.Regions[r.Name] = &pb.SystemSharedMemoryStatusResponse_RegionStatus{Name: r.Name, Key: r.Key, Offset: r.Offset, ByteSize: r.ByteSize}
	}
	return out, nil
}

// SystemSharedMemoryRegister registers a region (with --allow-client-shm).
func (svc *inferenceService) SystemSharedMemoryRegister(_ context.Context, in *pb.SystemSharedMemoryRegisterRequest) (*pb.SystemSharedMemoryRegisterResponse, error) {
	if err := svc.s.cfg.SharedMemory.Register(in.GetName(), in.GetKey(), in.GetOffset(), in.GetByteSize()); err != nil {
		return nil, toStatus(err)
	}
	return &pb.SystemSharedMemoryRegisterResponse{}, nil
}

// SystemSharedMemoryUnregister unregisters a region, or every region when
// name is empty.
func (svc *inferenceService) SystemSharedMemoryUnregister(_ context.Context, in *pb.SystemSharedMemoryUnregisterRequest) (*pb.SystemSharedMemoryUnregisterResponse, error) {
	if err := svc.s.cfg.SharedMemory.Unregister(in.GetName()); err != nil {
		return nil, toStatus(err)
	}
	return &pb.SystemSharedMemoryUnregisterResponse{}, nil
}

// CudaSharedMemoryStatus lists no regions: vigil has no CUDA shared memory.
func (svc *inferenceService) CudaSharedMemoryStatus(_ context.Context, in *pb.CudaSharedMemoryStatusRequest) (*pb.CudaSharedMemoryStatusResponse, error) {
	if in.GetName() != "" {
		return nil, toStatus(apierr.New(apierr.NotFound, "Unable to find cuda shared memory region: '%s'", in.GetName()))
	}
	return &pb.CudaSharedMemoryStatusResponse{}, nil
}

// CudaSharedMemoryRegister is refused: UNIMPLEMENTED.
func (svc *inferenceService) CudaSharedMemoryRegister(context.Context, *pb.CudaSharedMemoryRegisterRequest) (*pb.CudaSharedMemoryRegisterResponse, error) {
	if !svc.s.cfg.SharedMemory.Enabled() {
		return nil, toStatus(apierr.New(apierr.Unsupported, sharedmemory.DisabledMessage))
	}
	return nil, toStatus(apierr.New(apierr.Unsupported, cudaUnsupported))
}

// CudaSharedMemoryUnregister succeeds (there is nothing to unregister)
// while client shared memory is enabled, as Triton's examples expect when
// they clean up.
func (svc *inferenceService) CudaSharedMemoryUnregister(context.Context, *pb.CudaSharedMemoryUnregisterRequest) (*pb.CudaSharedMemoryUnregisterResponse, error) {
	if !svc.s.cfg.SharedMemory.Enabled() {
		return nil, toStatus(apierr.New(apierr.Unsupported, sharedmemory.DisabledMessage))
	}
	return &pb.CudaSharedMemoryUnregisterResponse{}, nil
}
