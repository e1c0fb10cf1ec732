package server_test

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/nubo-dev/nubo/internal/account"
	"github.com/nubo-dev/nubo/internal/codezip/ziptest"
)

// zerosZip is a small zip whose one entry inflates to n zero bytes. It is
// built by streaming through the deflater, so the test never holds n bytes.
func zerosZip(t testing.TB, n int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := zip.NewWriter(&buf)
	w.RegisterCompressor(zip.Deflate, func(out io.Writer) (io.WriteCloser, error) {
		return flate.NewWriter(out, flate.BestSpeed)
	})
	h := &zip.FileHeader{Name: "bootstrap", Method: zip.Deflate}
	h.SetMode(0o755)
	fw, err := w.CreateHeader(h)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for n > 0 {
		k := min(n, int64(len(chunk)))
		if _, err := fw.Write(chunk[:k]); err != nil {
			t.Fatal(err)
		}
		n -= k
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestValidation sends every kind of invalid CreateFunction AWS refuses and
// checks the code, the status, and that nothing was left behind.
func TestValidation(t *testing.T) {
	s := start(t)
	c := s.Dev()
	mustCreate(t, c, "existing", nil)
	baseline := listAll(t, c)

	bigEnv := map[string]string{}
	for i := range 5 {
		bigEnv["KEY_"+string(rune('A'+i))] = strings.Repeat("v", 1000)
	}
	bomb := zerosZip(t, 262144000+(1<<20))
	if len(bomb) > 2<<20 {
		t.Fatalf("bomb is %d bytes", len(bomb))
	}
	mem := func(n int32) func(*lambda.CreateFunctionInput) {
		return func(in *lambda.CreateFunctionInput) { in.MemorySize = aws.Int32(n) }
	}
	timeout := func(n int32) func(*lambda.CreateFunctionInput) {
		return func(in *lambda.CreateFunctionInput) { in.Timeout = aws.Int32(n) }
	}
	eph := func(n int32) func(*lambda.CreateFunctionInput) {
		return func(in *lambda.CreateFunctionInput) {
			in.EphemeralStorage = &types.EphemeralStorage{Size: aws.Int32(n)}
		}
	}
	code := func(z []byte) func(*lambda.CreateFunctionInput) {
		return func(in *lambda.CreateFunctionInput) { in.Code = &types.FunctionCode{ZipFile: z} }
	}
	cases := []struct {
		name   string
		mutate func(*lambda.CreateFunctionInput)
		status int
		code   string
		msg    string
	}{
		{"memory-127", mem(127), 400, "ValidationException", "Value '127' at 'memorySize' failed to satisfy constraint: Member must have value greater than or equal to 128"},
		{"memory-10241", mem(10241), 400, "ValidationException", "Value '10241' at 'memorySize' failed to satisfy constraint: Member must have value less than or equal to 10240"},
		{"timeout-0", timeout(0), 400, "ValidationException", "at 'timeout'"},
		{"timeout-901", timeout(901), 400, "ValidationException", "Value '901' at 'timeout'"},
		{"ephemeral-511", eph(511), 400, "ValidationException", "at 'ephemeralStorage.size'"},
		{"ephemeral-10241", eph(10241), 400, "ValidationException", "at 'ephemeralStorage.size'"},
		{"reserved-env", func(in *lambda.CreateFunctionInput) {
			in.Environment = &types.Environment{Variables: map[string]string{"AWS_REGION": "eu-west-1", "OK_KEY": "x"}}
		}, 400, "InvalidParameterValueException", "Reserved keys used in this request: AWS_REGION"},
		{"env-over-4kb", func(in *lambda.CreateFunctionInput) { in.Environment = &types.Environment{Variables: bigEnv} },
			400, "InvalidParameterValueException", "exceeded the 4KB limit"},
		{"unknown-runtime", func(in *lambda.CreateFunctionInput) { in.Runtime = "cobol85" }, 400, "ValidationException", "Value 'cobol85' at 'runtime'"},
		{"missing-handler", func(in *lambda.CreateFunctionInput) { in.Handler = nil }, 400, "InvalidParameterValueException", "Runtime and Handler are mandatory"},
		{"bad-role", func(in *lambda.CreateFunctionInput) { in.Role = aws.String("lambda-role") }, 400, "ValidationException", "at 'role'"},
		{"not-a-zip", code([]byte("this is not a zip file")), 400, "InvalidParameterValueException", "Could not unzip uploaded file"},
		{"absolute-path", code(ziptest.Zip(t, ziptest.File{Name: "/etc/bootstrap", Body: []byte("x"), Mode: 0o755})), 400, "InvalidParameterValueException", "Could not unzip"},
		{"dotdot-entry", code(ziptest.Zip(t, ziptest.File{Name: "bootstrap", Body: []byte("x"), Mode: 0o755}, ziptest.File{Name: "../escape", Body: []byte("x")})), 400, "InvalidParameterValueException", "Could not unzip"},
		{"escaping-symlink", code(ziptest.Zip(t, ziptest.File{Name: "bootstrap", Body: []byte("x"), Mode: 0o755}, ziptest.File{Name: "lib/out", Symlink: "../../etc/passwd"})), 400, "InvalidParameterValueException", "Could not unzip"},
		{"zip-bomb", code(bomb), 400, "InvalidParameterValueException", "Unzipped size must be smaller than 262144000 bytes"},
		{"empty-zip", code(nil), 400, "InvalidParameterValueException", ""},
		{"bad-name", func(in *lambda.CreateFunctionInput) { in.FunctionName = aws.String("has space") }, 400, "ValidationException", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := createInput(t, "v-"+tc.name, nil, tc.mutate)
			name := aws.ToString(in.FunctionName)
			_, err := c.CreateFunction(ctx(t), in)
			wantAPIError(t, err, tc.status, tc.code, tc.msg)
			if strings.Contains(name, " ") {
				return
			}
			_, err = c.GetFunction(ctx(t), &lambda.GetFunctionInput{FunctionName: aws.String(name)})
			wantAPIError(t, err, 404, "ResourceNotFoundException", "Function not found: "+fnArn(devAcct, name))
		})
	}

	t.Run("zipfile-over-50MB", func(t *testing.T) {
		big := make([]byte, 52428800+1)
		_, err := c.CreateFunction(ctx(t), createInput(t, "v-huge", big))
		wantAPIError(t, err, 413, "RequestEntityTooLargeException", "Zipped size must be smaller than 52428800 bytes")
		_, err = c.GetFunction(ctx(t), &lambda.GetFunctionInput{FunctionName: aws.String("v-huge")})
		wantAPIError(t, err, 404, "ResourceNotFoundException", "")
	})

	t.Run("body-over-request-limit", func(t *testing.T) {
		const n = 70167211 + 1
		// Signed over the real payload hash, streamed so the test never holds it.
		h := sha256.New()
		io.Copy(h, io.LimitReader(zeroReader{}, n))
		for _, chunked := range []bool{false, true} {
			var body io.Reader = io.LimitReader(zeroReader{}, n)
			if chunked {
				body = struct{ io.Reader }{body} // hides the length: chunked encoding
			}
			req, err := http.NewRequest("POST", s.URL+"/2015-03-31/functions", body)
			if err != nil {
				t.Fatal(err)
			}
			if !chunked {
				req.ContentLength = n
			}
			creds := aws.Credentials{AccessKeyID: account.DevAccessKey, SecretAccessKey: account.DevSecret}
			if err := v4.NewSigner().SignHTTP(ctx(t), creds, req, hex.EncodeToString(h.Sum(nil)), "lambda", region, time.Now()); err != nil {
				t.Fatal(err)
			}
			r := do(t, req)
			m := wantRawError(t, r, 413, "RequestEntityTooLargeException")
			if msg, _ := m["message"].(string); msg != "Request must be smaller than 70167211 bytes for the CreateFunction operation" {
				t.Errorf("chunked=%v: message %q", chunked, msg)
			}
		}
	})

	t.Run("invalid-updates-change-nothing", func(t *testing.T) {
		before, err := c.GetFunctionConfiguration(ctx(t), &lambda.GetFunctionConfigurationInput{FunctionName: aws.String("existing")})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.UpdateFunctionConfiguration(ctx(t), &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String("existing"), MemorySize: aws.Int32(10241)})
		wantAPIError(t, err, 400, "ValidationException", "memorySize")
		_, err = c.UpdateFunctionConfiguration(ctx(t), &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String("existing"),
			Environment: &types.Environment{Variables: map[string]string{"AWS_LAMBDA_RUNTIME_API": "evil:1"}}})
		wantAPIError(t, err, 400, "InvalidParameterValueException", "AWS_LAMBDA_RUNTIME_API")
		_, err = c.UpdateFunctionCode(ctx(t), &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("existing"), ZipFile: bomb})
		wantAPIError(t, err, 400, "InvalidParameterValueException", "Unzipped size")
		_, err = c.UpdateFunctionCode(ctx(t), &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("existing"), ZipFile: []byte("PK garbage")})
		wantAPIError(t, err, 400, "InvalidParameterValueException", "")
		after, err := c.GetFunctionConfiguration(ctx(t), &lambda.GetFunctionConfigurationInput{FunctionName: aws.String("existing")})
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToString(after.RevisionId) != aws.ToString(before.RevisionId) || aws.ToString(after.CodeSha256) != aws.ToString(before.CodeSha256) ||
			after.LastUpdateStatus != types.LastUpdateStatusSuccessful || aws.ToInt32(after.MemorySize) != aws.ToInt32(before.MemorySize) ||
			aws.ToString(after.LastModified) != aws.ToString(before.LastModified) {
			t.Errorf("refused updates changed the function: rev %s→%s sha %s→%s status %s",
				aws.ToString(before.RevisionId), aws.ToString(after.RevisionId), aws.ToString(before.CodeSha256), aws.ToString(after.CodeSha256), after.LastUpdateStatus)
		}
	})

	// Nothing any refusal did is visible in the listing.
	after := listAll(t, c)
	if len(after) != len(baseline) {
		t.Errorf("ListFunctions: %d functions after refusals, %d before: %v", len(after), len(baseline), functionNames(after))
	}
	if acct, err := c.GetAccountSettings(ctx(t), &lambda.GetAccountSettingsInput{}); err != nil || acct.AccountUsage.FunctionCount != 1 {
		t.Errorf("account usage after refusals: %+v %v", acct.AccountUsage, err)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }
