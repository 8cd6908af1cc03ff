package apierr

import (
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
)

// TestTritonMapping holds the table to Triton's HttpCodeFromError and
// GrpcStatusUtil::CodeToStatus for the codes both have.
func TestTritonMapping(t *testing.T) {
	cases := []struct {
		code Code
		http int
		grpc codes.Code
	}{
		{Internal, 500, codes.Internal},
		{NotFound, 404, codes.NotFound},
		{InvalidArgument, 400, codes.InvalidArgument},
		{Unavailable, 503, codes.Unavailable},
		{Unsupported, 501, codes.Unimplemented},
		{AlreadyExists, 400, codes.AlreadyExists},
		{Unknown, 400, codes.Unknown},
		{Cancelled, 400, codes.Canceled},
	}
	for _, tc := range cases {
		err := New(tc.code, "x")
		if HTTPStatus(err) != tc.http || GRPCCode(err) != tc.grpc {
			t.Errorf("%v: HTTP %d gRPC %v, want %d %v", tc.code, HTTPStatus(err), GRPCCode(err), tc.http, tc.grpc)
		}
	}
}

func TestTritonTexts(t *testing.T) {
	cases := []struct {
		err  *Error
		code Code
		msg  string
	}{
		{UnknownModel("m"), NotFound, "Request for unknown model: 'm' is not found"},
		{UnknownVersion("m", "3"), NotFound, "Request for unknown model: 'm' version 3 is not found"},
		{VersionNotReady("m", "1", "loading"), Unavailable, "Request for unknown model: 'm' version 1 is not at ready state: loading"},
		{NoAvailableVersions("m", ""), Unavailable, "Request for unknown model: 'm' has no available versions"},
		{LoadFailed(InvalidArgument, errors.New("bad config"), "m"), InvalidArgument, "failed to load 'm': bad config"},
	}
	for _, tc := range cases {
		if tc.err.Code != tc.code || tc.err.Error() != tc.msg {
			t.Errorf("got %v %q, want %v %q", tc.err.Code, tc.err.Error(), tc.code, tc.msg)
		}
	}
	for _, v := range []string{"", "1", "12"} {
		if err := CheckVersionString(v); err != nil {
			t.Errorf("CheckVersionString(%q) = %v", v, err)
		}
	}
	for _, v := range []string{"0", "-1", "abc", "1.5", " 1"} {
		err := CheckVersionString(v)
		if CodeOf(err) != InvalidArgument || err == nil {
			t.Errorf("CheckVersionString(%q) = %v, want InvalidArgument", v, err)
		}
	}
}
