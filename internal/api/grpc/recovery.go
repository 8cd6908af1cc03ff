package grpc

import (
	"context"
	"log/slog"
	"runtime/debug"

	gogrpc "google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A panic in a handler must cost one request, not the server: grpc-go,
// unlike net/http, does not recover handler panics. These interceptors turn
// one into INTERNAL and log it with its stack.

func recoverUnary(log *slog.Logger) gogrpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *gogrpc.UnaryServerInfo, handler gogrpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if p := recover(); p != nil {
				err = panicked(log, info.FullMethod, p)
			}
		}()
		return handler(ctx, req)
	}
}

func recoverStream(log *slog.Logger) gogrpc.StreamServerInterceptor {
	return func(srv any, ss gogrpc.ServerStream, info *gogrpc.StreamServerInfo, handler gogrpc.StreamHandler) (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = panicked(log, info.FullMethod, p)
			}
		}()
		return handler(srv, ss)
	}
}

func panicked(log *slog.Logger, method string, p any) error {
	log.Error("grpc handler panicked", "method", method, "panic", p, "stack", string(debug.Stack()))
	return status.Errorf(codes.Internal, "internal error in %s", method)
}
