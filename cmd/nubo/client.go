package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// clientFlags are the connection flags of the client subcommands. They
// default to the environment variables the AWS CLI reads, then to the
// development account on the default address.
type clientFlags struct {
	endpoint, region, key, secret, token string
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.endpoint, "endpoint", firstEnv("http://127.0.0.1:9000", "NUBO_ENDPOINT", "AWS_ENDPOINT_URL_LAMBDA", "AWS_ENDPOINT_URL"), "nubo API address")
	fs.StringVar(&c.region, "region", firstEnv("us-east-1", "AWS_REGION", "AWS_DEFAULT_REGION"), "region to sign for")
	c.key = firstEnv("test", "AWS_ACCESS_KEY_ID")
	c.secret = firstEnv("test", "AWS_SECRET_ACCESS_KEY")
	c.token = os.Getenv("AWS_SESSION_TOKEN")
}

func firstEnv(def string, names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return def
}

// get sends a SigV4-signed GET and returns the response (caller closes).
func (c *clientFlags) get(ctx context.Context, path string, q url.Values) (*http.Response, error) {
	return c.do(ctx, http.MethodGet, path, q)
}

// do sends a SigV4-signed request without a body.
func (c *clientFlags) do(ctx context.Context, method, path string, q url.Values) (*http.Response, error) {
	u, err := url.Parse(c.endpoint)
	if err != nil {
		return nil, fmt.Errorf("--endpoint %q: %w", c.endpoint, err)
	}
	u.Path = path
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(nil)
	creds := aws.Credentials{AccessKeyID: c.key, SecretAccessKey: c.secret, SessionToken: c.token}
	if err := v4.NewSigner().SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), "lambda", c.region, time.Now()); err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, apiError(resp, b)
	}
	return resp, nil
}

// apiError words an error answer as the AWS CLI does: the error code
// (x-amzn-ErrorType, without its ":" suffix) and the message.
func apiError(resp *http.Response, body []byte) error {
	var msg string
	var raw map[string]any
	if json.Unmarshal(body, &raw) == nil {
		for _, k := range []string{"Message", "message"} {
			if m, ok := raw[k].(string); ok {
				msg = m
			}
		}
	}
	code, _, _ := strings.Cut(resp.Header.Get("X-Amzn-Errortype"), ":")
	if msg == "" || code == "" {
		return fmt.Errorf("%s: %s", resp.Status, body)
	}
	return fmt.Errorf("%s (%d): %s", code, resp.StatusCode, msg)
}
