package invoke_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/nubo-dev/nubo/internal/codezip/ziptest"
)

// TestExtensions runs an external extension from a layer's
// /opt/extensions next to the Go function: it must get every INVOKE while
// the environment lives and SHUTDOWN when the environment retires.
func TestExtensions(t *testing.T) {
	h := newHarness(t)
	binaries(t)
	layer, err := h.c.PublishLayerVersion(ctx(t), &lambda.PublishLayerVersionInput{
		LayerName: aws.String("test-extension"),
		Content: &types.LayerVersionContentInput{ZipFile: ziptest.Zip(t,
			ziptest.File{Name: "extensions/"},
			ziptest.File{Name: "extensions/nubo-test-ext", Body: extBin, Mode: 0o755})},
	})
	if err != nil {
		t.Fatal(err)
	}
	shutdownDir := t.TempDir()
	h.create(t, "extfn", fnZip(t, "A"), func(in *lambda.CreateFunctionInput) {
		in.Layers = []string{aws.ToString(layer.LayerVersionArn)}
		in.Environment.Variables["EXT_SHUTDOWN_DIR"] = shutdownDir
	})

	r1 := h.invokeOK(t, "extfn", op("count"))
	r2 := h.invokeOK(t, "extfn", op("count"))
	r3 := h.invokeOK(t, "extfn", []byte(`{"op":"readfile","path":"ext-events"}`))
	var events string
	if err := json.Unmarshal(r3.Payload, &events); err != nil {
		t.Fatal(err)
	}
	// The INVOKE of an invocation is recorded before the next one starts:
	// the invoke phase ends only when the extension asks for its next event.
	lines := strings.Split(strings.TrimSpace(events), "\n")
	if len(lines) < 2 || lines[0] != "INVOKE "+r1.RequestID || lines[1] != "INVOKE "+r2.RequestID {
		t.Fatalf("the extension recorded %q; want INVOKE %s then INVOKE %s", lines, r1.RequestID, r2.RequestID)
	}
	if len(lines) == 3 && lines[2] != "INVOKE "+r3.RequestID || len(lines) > 3 {
		t.Errorf("the extension recorded %q after three invocations", lines)
	}
	s1 := decodeState(t, r1)

	var env map[string]string
	if err := json.Unmarshal(h.invokeOK(t, "extfn", op("env")).Payload, &env); err != nil {
		t.Fatal(err)
	}
	// Retire the environment: the new code runs in a new one, and the old
	// one's extension gets SHUTDOWN.
	h.updateCode(t, "extfn", fnZip(t, "B"))
	if s := decodeState(t, h.invokeOK(t, "extfn", op("count"))); s.Version != "B" || s.Stream == s1.Stream {
		t.Errorf("after the update: %+v; want code B in a new environment", s)
	}
	// The extension's output is the function's log: its SHUTDOWN line is
	// in the retired environment's stream.
	h.waitLog(t, "extfn", "\t"+s1.Stream+"\text event SHUTDOWN spindown\n")
	// The same through a host directory the extension writes to, which
	// only the process backend shares with the host.
	t.Run("ShutdownFile", func(t *testing.T) {
		if !isProcessBackend(env) {
			t.Skip("the sandbox does not share host directories with the extension")
		}
		envID := s1.Stream[strings.LastIndex(s1.Stream, "]")+1:]
		path := filepath.Join(shutdownDir, envID)
		deadline := time.Now().Add(5 * time.Second)
		for {
			b, err := os.ReadFile(path)
			if err == nil {
				if got := strings.TrimSpace(string(b)); got != "SHUTDOWN spindown" {
					t.Errorf("the retired environment's extension recorded %q; want SHUTDOWN spindown", got)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("no SHUTDOWN reached the extension of the retired environment within 5 s")
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}
