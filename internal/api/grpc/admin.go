package grpc

import (
	"context"
	"crypto/subtle"
	"strings"

	gogrpc "google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/vigilhq/vigil/internal/apierr"
	pb "github.com/vigilhq/vigil/internal/inferencepb"
)

// inferenceServicePrefix starts the full method name of every method of the
// inference service.
const inferenceServicePrefix = "/inference.GRPCInferenceService/"

// publicMethods are the inference service's methods anyone may call. Every
// other method of the service is an admin method: it needs the admin token
// when one is configured. The list fails closed: a method added to the
// service without being listed here needs the token (and the test that
// enumerates the service descriptor fails until it is classified).
var publicMethods = map[string]bool{
	pb.GRPCInferenceService_ServerLive_FullMethodName:       true,
	pb.GRPCInferenceService_ServerReady_FullMethodName:      true,
	pb.GRPCInferenceService_ModelReady_FullMethodName:       true,
	pb.GRPCInferenceService_ServerMetadata_FullMethodName:   true,
	pb.GRPCInferenceService_ModelMetadata_FullMethodName:    true,
	pb.GRPCInferenceService_ModelInfer_FullMethodName:       true,
	pb.GRPCInferenceService_ModelStreamInfer_FullMethodName: true,
	pb.GRPCInferenceService_ModelConfig_FullMethodName:      true,
	pb.GRPCInferenceService_ModelStatistics_FullMethodName:  true,
	// Shared memory status only lists what clients registered.
	pb.GRPCInferenceService_SystemSharedMemoryStatus_FullMethodName: true,
	pb.GRPCInferenceService_CudaSharedMemoryStatus_FullMethodName:   true,
}

// adminMethods are the admin methods the service has today (the repository
// API), listed for the documentation and the test; the rule is publicMethods.
var adminMethods = map[string]bool{
	pb.GRPCInferenceService_RepositoryIndex_FullMethodName:       true,
	pb.GRPCInferenceService_RepositoryModelLoad_FullMethodName:   true,
	pb.GRPCInferenceService_RepositoryModelUnload_FullMethodName: true,
	// Registering shared memory makes the server read and write it.
	pb.GRPCInferenceService_SystemSharedMemoryRegister_FullMethodName:   true,
	pb.GRPCInferenceService_SystemSharedMemoryUnregister_FullMethodName: true,
	pb.GRPCInferenceService_CudaSharedMemoryRegister_FullMethodName:     true,
	pb.GRPCInferenceService_CudaSharedMemoryUnregister_FullMethodName:   true,
}

// needsToken reports whether a full method name is an admin method.
func needsToken(method string) bool {
	return strings.HasPrefix(method, inferenceServicePrefix) && !publicMethods[method]
}

// adminUnary checks the admin token of admin methods before their handler.
func (s *Server) adminUnary() gogrpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *gogrpc.UnaryServerInfo, handler gogrpc.UnaryHandler) (any, error) {
		if needsToken(info.FullMethod) {
			if err := s.authorize(ctx); err != nil {
				return nil, toStatus(err)
			}
		}
		return handler(ctx, req)
	}
}

// adminStream is adminUnary for streaming methods.
func (s *Server) adminStream() gogrpc.StreamServerInterceptor {
	return func(srv any, ss gogrpc.ServerStream, info *gogrpc.StreamServerInfo, handler gogrpc.StreamHandler) error {
		if needsToken(info.FullMethod) {
			if err := s.authorize(ss.Context()); err != nil {
				return toStatus(err)
			}
		}
		return handler(srv, ss)
	}
}

// authorize checks the admin token, when one is configured: a missing or
// malformed "authorization" entry is Unauthenticated, a wrong token
// PermissionDenied.
func (s *Server) authorize(ctx context.Context) error {
	want := s.cfg.AdminToken
	if want == "" {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return apierr.New(apierr.Unauthenticated, "the repository API needs the admin token: send metadata \"authorization: Bearer <token>\"")
	}
	scheme, token, ok := strings.Cut(strings.TrimSpace(vals[0]), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return apierr.New(apierr.Unauthenticated, "authorization metadata must be \"Bearer <token>\"")
	}
	if subtle.ConstantTimeCompare([]byte(strings.TrimSpace(token)), []byte(want)) != 1 {
		return apierr.New(apierr.PermissionDenied, "the admin token is wrong")
	}
	return nil
}
