// Package servertest starts a real in-process nubo server for tests and
// hands out aws-sdk-go-v2 Lambda clients signed for its accounts.
package servertest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/lambda"

	"github.com/nubo-dev/nubo/internal/account"
	"github.com/nubo-dev/nubo/internal/nsbox"
	"github.com/nubo-dev/nubo/internal/server"
	"github.com/nubo-dev/nubo/internal/testutil"
)

// Accounts declared by Start besides the development account.
var (
	AccountA = account.Account{AccountID: "111111111111", Name: "team-a",
		AccessKeys: []account.AccessKey{{AccessKeyID: "AKIDTEAMA", SecretAccessKey: "secret-a"}}}
	AccountB = account.Account{AccountID: "222222222222", Name: "team-b",
		AccessKeys: []account.AccessKey{{AccessKeyID: "AKIDTEAMB", SecretAccessKey: "secret-b"}}}
)

// Server is a running test server.
type Server struct {
	*server.Server
	URL     string
	DataDir string
}

// Option adjusts the server config.
type Option func(*server.Config)

// Start runs a server on 127.0.0.1 with a fresh data dir, the development
// account and accounts A and B; it stops at the end of the test.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	dir := t.TempDir()
	accts := filepath.Join(dir, "accounts.json")
	writeAccounts(t, accts, AccountA, AccountB)
	cfg := server.Config{
		Listen:       "127.0.0.1:0",
		DataDir:      filepath.Join(dir, "data"),
		AccountsFile: accts,
		Logger:       Logger(t),
		// As `nubo serve` runs by default.
		TimerSlack: nsbox.DefaultTimerSlack,
		PlaceCPUs:  true,
	}
	// Servers of parallel test processes share this host: each gets its
	// own bridge, firewall table, subnet and host id range. The slot is
	// claimed host-wide: derived from the process id, two test processes
	// whose ids differ by a multiple of 199 collided.
	slot := testutil.Slot(t, "server", 199*8)
	cfg.NetName = fmt.Sprintf("nt%x", slot)
	cfg.Subnet = fmt.Sprintf("10.%d.%d.0/24", 220+slot/256, slot%256)
	cfg.SandboxSlots = 64
	cfg.SandboxUIDBase = 10_000_000 + slot*64*1000
	for _, o := range opts {
		o(&cfg)
	}
	s, err := server.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return &Server{Server: s, URL: "http://" + s.Addr(), DataDir: cfg.DataDir}
}

// Logger logs to the test output only when NUBO_TEST_LOG is set.
func Logger(t testing.TB) *slog.Logger {
	if os.Getenv("NUBO_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func writeAccounts(t testing.TB, path string, accts ...account.Account) {
	t.Helper()
	b := []byte("[")
	for i, a := range accts {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, []byte(`{"accountId":"`+a.AccountID+`","name":"`+a.Name+`","accessKeys":[{"accessKeyId":"`+
			a.AccessKeys[0].AccessKeyID+`","secretAccessKey":"`+a.AccessKeys[0].SecretAccessKey+`"}]}`)...)
	}
	b = append(b, ']')
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// Client returns a Lambda client for the given key pair.
func (s *Server) Client(key, secret string) *lambda.Client {
	return Client(s.URL, key, secret)
}

// Dev returns a client of the development account.
func (s *Server) Dev() *lambda.Client { return s.Client(account.DevAccessKey, account.DevSecret) }

// A returns a client of account A.
func (s *Server) A() *lambda.Client {
	return s.Client(AccountA.AccessKeys[0].AccessKeyID, AccountA.AccessKeys[0].SecretAccessKey)
}

// B returns a client of account B.
func (s *Server) B() *lambda.Client {
	return s.Client(AccountB.AccessKeys[0].AccessKeyID, AccountB.AccessKeys[0].SecretAccessKey)
}

// Client returns a Lambda client for any endpoint.
func Client(url, key, secret string) *lambda.Client {
	return lambda.New(lambda.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(url),
		Credentials:  credentials.NewStaticCredentialsProvider(key, secret, ""),
		// Tests assert on the first answer; SDK retries would hide errors.
		RetryMaxAttempts: 1,
	})
}

// Ctx returns a context that ends with the test or after d.
func Ctx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
