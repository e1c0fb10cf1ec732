package server_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/nubo-dev/nubo/internal/codezip/ziptest"
	"github.com/nubo-dev/nubo/internal/server"
	"github.com/nubo-dev/nubo/internal/server/servertest"
)

// TestCollectCode: packages nothing refers to any more (replaced code, a
// deleted function) are removed from the store; those of live functions,
// published versions and layers stay, and recent ones are spared.
func TestCollectCode(t *testing.T) {
	s := servertest.Start(t, func(c *server.Config) { c.Isolation = "none" })
	c := s.Dev()
	ctx := context.Background()
	zip := func(body string) []byte {
		return ziptest.Zip(t, ziptest.File{Name: "bootstrap", Body: []byte("#!/bin/sh\n# " + body + "\n"), Mode: 0o755})
	}
	create := func(name string, z []byte) {
		if _, err := c.CreateFunction(ctx, &lambda.CreateFunctionInput{FunctionName: aws.String(name), Runtime: types.RuntimeProvidedal2023,
			Handler: aws.String("x"), Role: aws.String("arn:aws:iam::000000000000:role/r"), Code: &types.FunctionCode{ZipFile: z}}); err != nil {
			t.Fatal(err)
		}
		w := lambda.NewFunctionActiveV2Waiter(c, func(o *lambda.FunctionActiveV2WaiterOptions) { o.MinDelay = 20 * time.Millisecond })
		if err := w.Wait(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(name)}, 20*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	create("keep", zip("v1"))
	if _, err := c.PublishVersion(ctx, &lambda.PublishVersionInput{FunctionName: aws.String("keep")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UpdateFunctionCode(ctx, &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("keep"), ZipFile: zip("v2")}); err != nil {
		t.Fatal(err)
	}
	create("gone", zip("gone"))
	if _, err := c.DeleteFunction(ctx, &lambda.DeleteFunctionInput{FunctionName: aws.String("gone")}); err != nil {
		t.Fatal(err)
	}
	layerZip := zip("layer")
	pub, err := c.PublishLayerVersion(ctx, &lambda.PublishLayerVersionInput{LayerName: aws.String("lib"), Content: &types.LayerVersionContentInput{ZipFile: layerZip}})
	if err != nil {
		t.Fatal(err)
	}
	refs, err := s.Control().References(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s.Control().CollectCode(ctx, refs, time.Hour); err != nil || n != 0 {
		t.Fatalf("within the grace period nothing may go: removed %d, %v", n, err)
	}
	n, err := s.Control().CollectCode(ctx, refs, 0)
	if err != nil || n != 1 {
		t.Fatalf("want exactly the deleted function's package removed, got %d, %v", n, err)
	}
	// Version 1 (v1), $LATEST (v2) and the layer still download.
	for _, q := range []string{"1", "$LATEST"} {
		out, err := c.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("keep"), Qualifier: aws.String(q)})
		if err != nil {
			t.Fatal(err)
		}
		if b := download(t, aws.ToString(out.Code.Location)); len(b) == 0 {
			t.Fatalf("code of %s is gone", q)
		}
	}
	lv, err := c.GetLayerVersion(ctx, &lambda.GetLayerVersionInput{LayerName: aws.String("lib"), VersionNumber: aws.Int64(1)})
	if err != nil || len(download(t, aws.ToString(lv.Content.Location))) == 0 {
		t.Fatalf("layer code gone: %v", err)
	}

	// What keeps a node's unpacked code (codecache.Collect): every zip
	// referred to, and every list of layers in use.
	usesZip := zip("uses the layer")
	if _, err := c.CreateFunction(ctx, &lambda.CreateFunctionInput{FunctionName: aws.String("uses"), Runtime: types.RuntimeProvidedal2023,
		Handler: aws.String("x"), Role: aws.String("arn:aws:iam::000000000000:role/r"), Code: &types.FunctionCode{ZipFile: usesZip},
		Layers: []string{aws.ToString(pub.LayerVersionArn)}}); err != nil {
		t.Fatal(err)
	}
	refs, err = s.Control().References(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hexOf := func(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }
	for _, z := range [][]byte{zip("v1"), zip("v2"), layerZip, usesZip} {
		if !refs.Zips[hexOf(z)] {
			t.Errorf("a referred zip is missing from the references")
		}
	}
	if refs.Zips[hexOf(zip("gone"))] || len(refs.Zips) != 4 {
		t.Errorf("references hold %d zips, want the 4 referred to", len(refs.Zips))
	}
	if len(refs.Layers) != 1 || len(refs.Layers[0]) != 1 || refs.Layers[0][0] != hexOf(layerZip) {
		t.Errorf("layer lists %v, want one holding the layer", refs.Layers)
	}
	// Per account: what an account's own copies (codecache.Own) are kept
	// for; no other account's.
	dev := refs.Accounts["000000000000"]
	if len(refs.Accounts) != 1 || dev == nil || !dev.Zips[hexOf(usesZip)] || len(dev.Zips) != 4 || len(dev.Layers) != 1 {
		t.Errorf("references by account: %d accounts, the development account's %+v", len(refs.Accounts), dev)
	}
}
