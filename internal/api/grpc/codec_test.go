package grpc

import (
	"bytes"
	"testing"
	"unsafe"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	pb "github.com/vigilhq/vigil/internal/inferencepb"
)

func TestTensorCodecRoundTrips(t *testing.T) {
	c := newTensorCodec()
	big := bytes.Repeat([]byte{1, 2, 3, 4}, rawThreshold)
	req := &pb.ModelInferRequest{
		ModelName: "identity", Id: "r1",
		Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "A", Datatype: "FP32", Shape: []int64{int64(len(big) / 4)}},
			{Name: "B", Datatype: "UINT8", Shape: []int64{3}}},
		Parameters:       map[string]*pb.InferParameter{"p": {ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: 5}}},
		RawInputContents: [][]byte{big, {7, 8, 9}},
	}
	wire, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	// As the transport delivers it: in pieces.
	var pieces mem.BufferSlice
	for b := wire; len(b) > 0; {
		n := min(len(b), 16<<10)
		pieces = append(pieces, mem.SliceBuffer(b[:n]))
		b = b[n:]
	}
	var got pb.ModelInferRequest
	if err := c.Unmarshal(pieces, &got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&got, req) {
		t.Fatalf("unmarshalled %v, want %v", &got, req)
	}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(append(wire[:len(wire):len(wire)], 0xff))}, &got); err == nil {
		t.Error("a truncated field was accepted")
	}

	resp := &pb.ModelInferResponse{ModelName: "identity", Id: "r1",
		Outputs:           []*pb.ModelInferResponse_InferOutputTensor{{Name: "O", Datatype: "FP32", Shape: []int64{int64(len(big) / 4)}}},
		RawOutputContents: [][]byte{{1}, big}}
	out, err := c.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	aliased := false
	for _, b := range out {
		if unsafe.SliceData(b.ReadOnlyData()) == unsafe.SliceData(big) {
			aliased = true
		}
	}
	if !aliased {
		t.Error("the large raw output was copied into the marshalled message")
	}
	var back pb.ModelInferResponse
	if err := proto.Unmarshal(out.Materialize(), &back); err != nil || !proto.Equal(&back, resp) {
		t.Fatalf("marshalled response reads back as %v (%v)", &back, err)
	}
	if len(resp.RawOutputContents) != 2 {
		t.Error("Marshal changed the response")
	}
}
