package main

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/vigilhq/vigil/internal/inferencepb"
	"github.com/vigilhq/vigil/internal/rawcontents"
)

// clientCodec is the benchmark's gRPC codec, the same for every server: a
// ModelInferRequest's raw inputs go to the transport uncopied and a
// ModelInferResponse's raw outputs alias the received message (package
// rawcontents). With the standard codec the client's own copies of a
// 16 MiB tensor took 13–16 ms of CPU per round trip on this 2-core
// machine, more than vigil's server and stub together, and the large
// tensor figure measured the client. Other messages use protobuf's codec.
type clientCodec struct{ fallback encoding.CodecV2 }

func newClientCodec() clientCodec { return clientCodec{encoding.GetCodecV2("proto")} }

func (clientCodec) Name() string { return "proto" }

func (c clientCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(*inferencepb.ModelInferRequest)
	if !ok || rawcontents.Len(m.RawInputContents) < rawcontents.MinUncopied {
		return c.fallback.Marshal(v)
	}
	// A shallow copy without the raw inputs: the caller's message may be
	// in use by other goroutines.
	head, err := proto.Marshal(&inferencepb.ModelInferRequest{ModelName: m.ModelName, ModelVersion: m.ModelVersion,
		Id: m.Id, Parameters: m.Parameters, Inputs: m.Inputs, Outputs: m.Outputs})
	if err != nil {
		return nil, err
	}
	return rawcontents.Join(head, rawcontents.InputField, m.RawInputContents, nil), nil
}

func (c clientCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*inferencepb.ModelInferResponse)
	if !ok || data.Len() < rawcontents.MinUncopied {
		return c.fallback.Unmarshal(data, v)
	}
	rest, raw, err := rawcontents.Split(data.Materialize(), rawcontents.OutputField)
	if err != nil {
		return err
	}
	if err := proto.Unmarshal(rest, m); err != nil {
		return err
	}
	m.RawOutputContents = raw
	return nil
}

// dialInference connects the benchmark's gRPC client to addr: messages up
// to 1 GiB, the tensor codec, and transport settings for large messages
// (a 16 MiB flow-control window and 256 KiB socket reads and writes, the
// figures vigil's server uses) so that a 16 MiB response is not held up
// by window updates. The same for every server measured.
func dialInference(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30), grpc.MaxCallSendMsgSize(1<<30),
			grpc.ForceCodecV2(newClientCodec())),
		grpc.WithInitialWindowSize(16<<20), grpc.WithInitialConnWindowSize(16<<20),
		grpc.WithReadBufferSize(256<<10), grpc.WithWriteBufferSize(256<<10))
}
