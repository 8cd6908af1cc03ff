package rawcontents

import (
	"bytes"
	"testing"
	"unsafe"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/vigilhq/vigil/internal/inferencepb"
)

func TestJoinThenSplitIsTheSameMessage(t *testing.T) {
	big := bytes.Repeat([]byte{1, 2, 3, 4}, MinUncopied/4)
	req := &pb.ModelInferRequest{ModelName: "identity", Id: "r1",
		Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "A", Datatype: "FP32", Shape: []int64{int64(len(big) / 4)}},
			{Name: "B", Datatype: "UINT8", Shape: []int64{3}}, {Name: "C", Datatype: "UINT8", Shape: []int64{0}}},
		RawInputContents: [][]byte{big, {7, 8, 9}, {}}}
	head, err := proto.Marshal(&pb.ModelInferRequest{ModelName: req.ModelName, Id: req.Id, Inputs: req.Inputs})
	if err != nil {
		t.Fatal(err)
	}
	var handed [][]byte
	wire := Join(head, InputField, req.RawInputContents, func(r []byte) mem.Buffer {
		handed = append(handed, r)
		return mem.SliceBuffer(r)
	})
	if len(handed) != 1 || unsafe.SliceData(handed[0]) != unsafe.SliceData(big) {
		t.Fatalf("values handed uncopied: %d, want the large one alone", len(handed))
	}
	// Any protobuf decoder reads the joined bytes as the message.
	var std pb.ModelInferRequest
	if err := proto.Unmarshal(wire.Materialize(), &std); err != nil || !proto.Equal(&std, req) {
		t.Fatalf("proto.Unmarshal of the joined message: %v, %v", err, &std)
	}

	buf := wire.Materialize()
	rest, raw, err := Split(buf, InputField)
	if err != nil {
		t.Fatal(err)
	}
	var got pb.ModelInferRequest
	if err := proto.Unmarshal(rest, &got); err != nil {
		t.Fatal(err)
	}
	got.RawInputContents = raw
	if !proto.Equal(&got, req) {
		t.Fatalf("split %v, want %v", &got, req)
	}
	if off := uintptr(unsafe.Pointer(unsafe.SliceData(raw[0]))) - uintptr(unsafe.Pointer(unsafe.SliceData(buf))); off >= uintptr(len(buf)) {
		t.Error("the split value does not alias the received bytes")
	}
	if cap(raw[1]) != len(raw[1]) {
		t.Errorf("a split value has room to grow into its neighbour: cap %d, len %d", cap(raw[1]), len(raw[1]))
	}
}

func TestSplitKeepsFieldsInTheirOrderAndSkipsOthersOfTheNumber(t *testing.T) {
	// Field 7 as a varint is not raw contents: it stays in rest.
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, "m")
	b = protowire.AppendTag(b, InputField, protowire.VarintType)
	b = protowire.AppendVarint(b, 5)
	b = protowire.AppendTag(b, InputField, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte("x"))
	rest, raw, err := Split(b, InputField)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) != 1 || string(raw[0]) != "x" {
		t.Errorf("raw %q, want [x]", raw)
	}
	if want := b[:len(b)-3]; !bytes.Equal(rest, want) {
		t.Errorf("rest %x, want %x", rest, want)
	}
}

func TestSplitRefusesATruncatedMessage(t *testing.T) {
	var b []byte
	b = protowire.AppendTag(b, InputField, protowire.BytesType)
	b = protowire.AppendVarint(b, 100)
	b = append(b, 1, 2, 3)
	if _, _, err := Split(b, InputField); err == nil {
		t.Fatalf("a truncated value: %v, want an error", err)
	}
	if _, _, err := Split([]byte{0xff}, InputField); err == nil {
		t.Fatal("a truncated tag was accepted")
	}
}

func TestLen(t *testing.T) {
	if n := Len([][]byte{{1, 2}, nil, {3}}); n != 3 {
		t.Errorf("Len = %d, want 3", n)
	}
}
