package grpc

import (
	"bytes"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	pb "github.com/vigilhq/vigil/internal/inferencepb"
	"github.com/vigilhq/vigil/internal/memfile"
	"github.com/vigilhq/vigil/internal/rawcontents"
)

func TestTensorCodecRoundTrips(t *testing.T) {
	c := newTensorCodec(nil)
	big := bytes.Repeat([]byte{1, 2, 3, 4}, rawcontents.MinUncopied)
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
	if !aliases(out, big) {
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

// aliases reports whether one of out's buffers starts at b's first byte:
// b went to the transport uncopied.
func aliases(out mem.BufferSlice, b []byte) bool {
	for _, buf := range out {
		if unsafe.SliceData(buf.ReadOnlyData()) == unsafe.SliceData(b) {
			return true
		}
	}
	return false
}

// A large ModelInferRequest goes into a memory file of the pool: the
// handler takes it, hands it on with the response, and the transport's
// free of the output buffer that lies in it gives it back.
func TestTensorCodecMemoryFiles(t *testing.T) {
	pool := memfile.NewPool(0)
	defer pool.Close()
	c := newTensorCodec(pool)
	big := bytes.Repeat([]byte{1, 2, 3, 4}, 1<<17) // 512 KiB
	wire, err := proto.Marshal(&pb.ModelInferRequest{ModelName: "identity",
		Inputs:           []*pb.ModelInferRequest_InferInputTensor{{Name: "A", Datatype: "UINT8", Shape: []int64{int64(len(big))}}},
		RawInputContents: [][]byte{big}})
	if err != nil {
		t.Fatal(err)
	}
	var got pb.ModelInferRequest
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, &got); err != nil {
		t.Fatal(err)
	}
	f := c.requestFile(&got)
	if f == nil || !f.Contains(got.RawInputContents[0]) || !bytes.Equal(got.RawInputContents[0], big) {
		t.Fatalf("the raw input is not in a memory file (file %v)", f)
	}
	if c.requestFile(&got) != nil {
		t.Fatal("a file was taken twice")
	}
	// The response's output is a view of the input (an identity model).
	resp := &pb.ModelInferResponse{ModelName: "identity",
		Outputs:           []*pb.ModelInferResponse_InferOutputTensor{{Name: "O", Datatype: "UINT8", Shape: []int64{int64(len(big))}}},
		RawOutputContents: [][]byte{got.RawInputContents[0]}}
	c.passResponseFile(resp, f)
	out, err := c.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	if st := pool.Stats(); st.Idle != 0 {
		t.Fatalf("the file went back while the transport holds its output: %+v", st)
	}
	var back pb.ModelInferResponse
	if err := proto.Unmarshal(out.Materialize(), &back); err != nil || !bytes.Equal(back.RawOutputContents[0], big) {
		t.Fatalf("marshalled response: %v", err)
	}
	out.Free()
	if st := pool.Stats(); st.Idle != 1 || st.Open != 1 {
		t.Fatalf("after the transport freed the output: %+v", st)
	}

	// A response with no large output (an error in an output, say) lets
	// the file go at Marshal.
	g, err := pool.Get(1)
	if err != nil {
		t.Fatal(err)
	}
	small := &pb.ModelInferResponse{ModelName: "identity", RawOutputContents: [][]byte{{1, 2, 3}}}
	c.passResponseFile(small, g)
	if _, err := c.Marshal(small); err != nil {
		t.Fatal(err)
	}
	if st := pool.Stats(); st.Idle != 1 {
		t.Fatalf("a small response kept its file: %+v", st)
	}
}

// A streamed response's large outputs go to the transport uncopied, those
// in the request's memory file holding it; the bytes are the protobuf
// encoding of the same message.
func TestTensorCodecStreamResponses(t *testing.T) {
	pool := memfile.NewPool(0)
	defer pool.Close()
	c := newTensorCodec(pool)
	f, err := pool.Get(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	view := f.Bytes()[64 : 64+512<<10]
	for i := range view {
		view[i] = byte(i * 7)
	}
	inner := &pb.ModelInferResponse{ModelName: "identity", Id: "s1",
		Outputs:           []*pb.ModelInferResponse_InferOutputTensor{{Name: "O", Datatype: "UINT8", Shape: []int64{int64(len(view))}}},
		Parameters:        map[string]*pb.InferParameter{paramFinalResponse: boolParam(true)},
		RawOutputContents: [][]byte{{1, 2}, view}}
	m := &pb.ModelStreamInferResponse{InferResponse: inner}
	want, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	c.passResponseFile(inner, f.Ref()) // the response's reference
	f.Release()                        // the request ended
	out, err := c.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if !aliases(out, view) {
		t.Error("the large raw output was copied into the marshalled message")
	}
	var back pb.ModelStreamInferResponse
	if err := proto.Unmarshal(out.Materialize(), &back); err != nil || !proto.Equal(&back, m) {
		t.Fatalf("marshalled stream response reads back as %v (%v)", &back, err)
	}
	if got := out.Len(); got != len(want) {
		t.Errorf("marshalled %d bytes, protobuf %d", got, len(want))
	}
	if m.InferResponse != inner {
		t.Error("Marshal changed the message")
	}
	if st := pool.Stats(); st.Idle != 0 {
		t.Fatalf("the file went back while the transport holds its output: %+v", st)
	}
	out.Free()
	if st := pool.Stats(); st.Idle != 1 {
		t.Fatalf("after the transport freed the output: %+v", st)
	}

	// Small outputs are copied, and the file goes back at Marshal; an
	// error response has no infer_response to look into.
	g, err := pool.Get(1)
	if err != nil {
		t.Fatal(err)
	}
	small := &pb.ModelInferResponse{ModelName: "identity", RawOutputContents: [][]byte{{1, 2, 3}}}
	c.passResponseFile(small, g)
	if _, err := c.Marshal(&pb.ModelStreamInferResponse{InferResponse: small}); err != nil {
		t.Fatal(err)
	}
	if st := pool.Stats(); st.Idle != 1 || st.Open != 1 {
		t.Fatalf("a small streamed response kept its file: %+v", st)
	}
	if _, err := c.Marshal(&pb.ModelStreamInferResponse{ErrorMessage: "failed"}); err != nil {
		t.Fatal(err)
	}
}

// A message whose handler never took its file gives it back once the
// message is unreachable.
func TestTensorCodecUntakenFileGoesBack(t *testing.T) {
	pool := memfile.NewPool(0)
	defer pool.Close()
	c := newTensorCodec(pool)
	wire, err := proto.Marshal(&pb.ModelInferRequest{ModelName: "m", RawInputContents: [][]byte{make([]byte, 300<<10)}})
	if err != nil {
		t.Fatal(err)
	}
	func() {
		var m pb.ModelInferRequest
		if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, &m); err != nil {
			t.Fatal(err)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for pool.Stats().Idle != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the file of an unreachable message did not go back: %+v", pool.Stats())
		}
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
}
