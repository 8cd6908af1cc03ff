package main

import (
	"bytes"
	"testing"
	"unsafe"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/vigilhq/vigil/internal/inferencepb"
	"github.com/vigilhq/vigil/internal/rawcontents"
)

func TestClientCodecSendsAndReceivesTheSameMessages(t *testing.T) {
	c := newClientCodec()
	big := bytes.Repeat([]byte{1, 2, 3, 4}, rawcontents.MinUncopied/4)
	req := &inferencepb.ModelInferRequest{ModelName: "identity_fp32", ModelVersion: "1", Id: "r1",
		Parameters:       map[string]*inferencepb.InferParameter{"p": {ParameterChoice: &inferencepb.InferParameter_BoolParam{BoolParam: true}}},
		Inputs:           []*inferencepb.ModelInferRequest_InferInputTensor{{Name: "INPUT0", Datatype: "FP32", Shape: []int64{int64(len(big) / 4)}}},
		Outputs:          []*inferencepb.ModelInferRequest_InferRequestedOutputTensor{{Name: "OUTPUT0"}},
		RawInputContents: [][]byte{big}}
	out, err := c.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	uncopied := false
	for _, b := range out {
		uncopied = uncopied || unsafe.SliceData(b.ReadOnlyData()) == unsafe.SliceData(big)
	}
	if !uncopied {
		t.Error("the large raw input was copied into the marshalled request")
	}
	var sent inferencepb.ModelInferRequest
	if err := proto.Unmarshal(out.Materialize(), &sent); err != nil || !proto.Equal(&sent, req) {
		t.Fatalf("the server would read %v (%v), want %v", &sent, err, req)
	}

	for _, resp := range []*inferencepb.ModelInferResponse{
		{ModelName: "identity_fp32", Id: "r1", RawOutputContents: [][]byte{big}},
		{ModelName: "simple", RawOutputContents: [][]byte{{1, 2, 3, 4}}}, // small: protobuf's codec
	} {
		wire, err := proto.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		var got inferencepb.ModelInferResponse
		if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, &got); err != nil || !proto.Equal(&got, resp) {
			t.Errorf("received %v (%v), want %v", &got, err, resp)
		}
	}
}
