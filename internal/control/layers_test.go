package control

import (
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/nubo-dev/nubo/internal/codezip/ziptest"
	"github.com/nubo-dev/nubo/internal/function"
)

// TestLayerVersionsStoredApart: each layer version is a record of its own,
// so a layer's head does not grow with its versions (one record holding
// them all outgrew the store's largest value after about 2500 publishes,
// and every publish after that failed). Versions written the old way, in
// the head, are still read, listed, counted and deleted, and numbering
// goes on after them.
func TestLayerVersionsStoredApart(t *testing.T) {
	ctx, st := testStore(t, 60*time.Second)
	s := New(st, Options{Region: "us-east-1", Logger: slog.New(slog.DiscardHandler)})
	defer s.Close()
	const acct, name = "000000000000", "tools"

	// Two versions as data from before the change has them.
	old := &layerRecord{LastVersion: 2, Versions: map[string]*storedLayer{}}
	for _, n := range []int64{1, 2} {
		old.Versions[strconv.FormatInt(n, 10)] = &storedLayer{LayerVersion: LayerVersion{Version: n, Content: &LayerContent{CodeSize: 100},
			LayerArn: "arn:aws:lambda:us-east-1:" + acct + ":layer:" + name}, Hex: "old" + strconv.FormatInt(n, 10)}
	}
	if err := st.Put(ctx, layerKey(acct, name), old); err != nil {
		t.Fatal(err)
	}
	headSize := func() int {
		e, err := st.Meta.Get(ctx, layerKey(acct, name))
		if err != nil {
			t.Fatal(err)
		}
		return len(e.Value())
	}
	headStart := headSize()

	zip := ziptest.Zip(t, ziptest.File{Name: "bin/tool", Body: []byte("#!/bin/sh\n"), Mode: 0o755})
	const publishes = 40
	for i := range publishes {
		lv, err := s.PublishLayerVersion(ctx, acct, name, &PublishLayerInput{Content: &function.Code{ZipFile: zip}})
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		if want := int64(3 + i); lv.Version != want {
			t.Fatalf("publish %d: version %d, want %d", i, lv.Version, want)
		}
	}
	// The head's counter has gained a digit; nothing else of it grew.
	if n := headSize(); n > headStart+1 {
		t.Fatalf("the layer's head grew from %d to %d bytes over %d publishes", headStart, n, publishes)
	}

	last := int64(2 + publishes)
	vs, _, err := s.ListLayerVersions(ctx, acct, name, "", "", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != int(last) || vs[0].Version != last || vs[len(vs)-1].Version != 1 {
		t.Fatalf("ListLayerVersions: %d versions from %d to %d; want %d from %d to 1", len(vs), vs[0].Version, vs[len(vs)-1].Version, last, last)
	}
	for _, n := range []int64{1, last} {
		if lv, err := s.GetLayerVersion(ctx, acct, name, n); err != nil || lv.Version != n {
			t.Fatalf("GetLayerVersion %d: %+v, %v", n, lv, err)
		}
	}
	ls, _, err := s.ListLayers(ctx, acct, "", "", "", 0)
	if err != nil || len(ls) != 1 || ls[0].LatestMatchingVersion.Version != last {
		t.Fatalf("ListLayers: %+v, %v; want %s at version %d", ls, err, name, last)
	}
	set, err := s.GetAccountSettings(ctx, acct)
	if err != nil {
		t.Fatal(err)
	}
	if want := 2*100 + publishes*int64(len(zip)); set.AccountUsage.TotalCodeSize != want {
		t.Fatalf("TotalCodeSize %d, want %d", set.AccountUsage.TotalCodeSize, want)
	}

	// Delete one version of each kind, and the newest.
	for _, n := range []int64{2, 3, last} {
		if err := s.DeleteLayerVersion(ctx, acct, name, n); err != nil {
			t.Fatalf("delete %d: %v", n, err)
		}
		if _, err := s.GetLayerVersion(ctx, acct, name, n); err == nil {
			t.Fatalf("version %d still there after its delete", n)
		}
	}
	if ls, _, err = s.ListLayers(ctx, acct, "", "", "", 0); err != nil || len(ls) != 1 || ls[0].LatestMatchingVersion.Version != last-1 {
		t.Fatalf("ListLayers after deletes: %+v, %v; want version %d", ls, err, last-1)
	}
	// Numbers are not reused.
	lv, err := s.PublishLayerVersion(ctx, acct, name, &PublishLayerInput{Content: &function.Code{ZipFile: zip}})
	if err != nil || lv.Version != last+1 {
		t.Fatalf("publish after deletes: %+v, %v; want version %d", lv, err, last+1)
	}

	// The head keeps what is left of the old versions.
	var head layerRecord
	if _, err := st.Get(ctx, layerKey(acct, name), &head); err != nil {
		t.Fatal(err)
	}
	if len(head.Versions) != 1 || head.Versions["1"] == nil {
		t.Fatalf("head versions %v, want the old version 1 only", head.Versions)
	}
}
