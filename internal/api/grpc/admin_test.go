package grpc

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/emptypb"

	pb "github.com/vigilhq/vigil/internal/inferencepb"
)

// Every method of the inference service is classified, and every method
// that is not public refuses a call without the admin token before its
// handler runs.
func TestEveryAdminMethodChecksTheToken(t *testing.T) {
	h := newHarness(t, Config{AdminToken: "s3cret"}, snap(nil))
	ctx := testCtx(t)
	var names []string
	for _, m := range pb.GRPCInferenceService_ServiceDesc.Methods {
		names = append(names, inferenceServicePrefix+m.MethodName)
	}
	for _, st := range pb.GRPCInferenceService_ServiceDesc.Streams {
		names = append(names, inferenceServicePrefix+st.StreamName)
	}
	admins := 0
	for _, name := range names {
		if publicMethods[name] == adminMethods[name] {
			t.Errorf("%s is neither public nor admin (or both): classify it in admin.go", name)
			continue
		}
		if !adminMethods[name] {
			continue
		}
		admins++
		// An empty message decodes as any request type.
		err := h.conn.Invoke(ctx, name, &emptypb.Empty{}, &emptypb.Empty{})
		wantCode(t, err, codes.Unauthenticated)
		err = h.conn.Invoke(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer wrong"), name, &emptypb.Empty{}, &emptypb.Empty{})
		wantCode(t, err, codes.PermissionDenied)
	}
	if admins < 3 {
		t.Fatalf("%d admin methods, want the three repository methods at least", admins)
	}
	if len(h.models.readyArg)+len(h.models.loads)+len(h.models.unloads) != 0 {
		t.Fatal("an unauthorized call reached the model manager")
	}
	// A streaming admin method (none today) is refused by the same rule.
	if !needsToken("/inference.GRPCInferenceService/SomeFutureStream") {
		t.Error("an unclassified method does not need the token: the rule must fail closed")
	}
}

// RepositoryIndex needs the token (it leaked every reason before), and
// with --health-hide-reasons and no token it withholds reasons.
func TestRepositoryIndexTokenAndHiddenReasons(t *testing.T) {
	h := newHarness(t, Config{AdminToken: "s3cret"}, snap(nil))
	ctx := testCtx(t)
	_, err := h.client.RepositoryIndex(ctx, &pb.RepositoryIndexRequest{})
	wantCode(t, err, codes.Unauthenticated)
	resp, err := h.client.RepositoryIndex(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer s3cret"), &pb.RepositoryIndexRequest{})
	if err != nil || resp.Models[1].Reason == "" {
		t.Fatalf("authorized index = %v, %v; want the reason", resp, err)
	}

	open := newHarness(t, Config{HideReasons: true}, snap(nil))
	resp, err = open.client.RepositoryIndex(ctx, &pb.RepositoryIndexRequest{})
	if err != nil || resp.Models[1].Reason != "" || resp.Models[1].State != "UNAVAILABLE" {
		t.Fatalf("index with hidden reasons and no token = %v, %v", resp, err)
	}
}
