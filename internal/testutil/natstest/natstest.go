// Package natstest gives tests an embedded NATS server with JetStream,
// reached in-process, that lives as long as the test.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Start runs a server with JetStream in a temporary directory (opts may
// set more, such as MaxPayload; nil for none) and returns a connection to
// it and its JetStream context.
func Start(t testing.TB, opts *server.Options) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	o := server.Options{}
	if opts != nil {
		o = *opts
	}
	o.JetStream, o.StoreDir, o.DontListen, o.NoSigs = true, t.TempDir(), true, true
	srv, err := server.NewServer(&o)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	nc, err := nats.Connect("", nats.InProcessServer(srv))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}
