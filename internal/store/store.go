// Package store owns nubo's durable state: a NATS JetStream, either embedded
// (the default: a nats-server inside the nubo process, connected in-process,
// no TCP port, data under the data dir) or external (--nats-url, a server or
// cluster run by the operator).
//
// Buckets and keys:
//
//	KV "nubo_meta"     fn.<account>.<name>           function record (control package)
//	                   ver.<account>.<name>.<n>      published version snapshot
//	                   layer.<account>.<name>        layer head (last version number)
//	                   layer.<account>.<name>.<n>    layer version n
//	                   url.<id>                      function URL id → its function (control package)
//	Object "nubo_code" <hex sha256 of the zip>       function and layer zips, stored once
//
// Durability: the embedded server fsyncs every write before acknowledging it
// (SyncAlways), so a write that returned may be relied on after kill -9. With
// an external server the operator's sync_interval decides; use "always".
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sys/unix"
)

// Bucket names.
const (
	MetaBucket = "nubo_meta"
	CodeBucket = "nubo_code"
)

// Config says where state lives.
type Config struct {
	// DataDir holds the embedded server's JetStream files and nubo's lock file.
	DataDir string
	// NATSURL, when set, uses that NATS server or cluster instead of an embedded one.
	NATSURL string
	// Replicas for buckets on an external cluster (default 1).
	Replicas int
	Logger   *slog.Logger
}

// Store is an open connection to JetStream with nubo's buckets.
type Store struct {
	NC   *nats.Conn
	JS   jetstream.JetStream
	Meta jetstream.KeyValue
	Code jetstream.ObjectStore

	srv  *server.Server
	lock *os.File
	log  *slog.Logger
}

// ErrNotFound is returned for a missing key or object.
var ErrNotFound = errors.New("not found")

// ErrExists is returned when creating a key that exists.
var ErrExists = errors.New("already exists")

// ErrRevision is returned when a compare-and-set lost a race.
var ErrRevision = errors.New("revision mismatch")

// Open prepares the data dir, starts or connects to NATS and opens the buckets.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Store{log: cfg.Logger}
	if err := s.lockDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	if err := s.connect(cfg); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.openBuckets(ctx, cfg); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// lockDataDir creates the data dir and takes an exclusive lock on it, so two
// nubo processes never share one JetStream store.
func (s *Store) lockDataDir(dir string) error {
	if dir == "" {
		return errors.New("data dir: not set")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data dir %s: %w", dir, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("data dir %s is not writable: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return fmt.Errorf("data dir %s is in use by another nubo process", dir)
	}
	s.lock = f
	return nil
}

func (s *Store) connect(cfg Config) error {
	opts := []nats.Option{nats.Name("nubo"), nats.MaxReconnects(-1)}
	if cfg.NATSURL != "" {
		nc, err := nats.Connect(cfg.NATSURL, append(opts, nats.Timeout(5*time.Second), nats.RetryOnFailedConnect(false))...)
		if err != nil {
			return fmt.Errorf("nats %s: %w", cfg.NATSURL, err)
		}
		s.NC = nc
	} else {
		srv, err := server.NewServer(&server.Options{
			ServerName: "nubo",
			JetStream:  true,
			StoreDir:   filepath.Join(cfg.DataDir, "jetstream"),
			// No listener: nubo talks to its embedded server in-process only.
			DontListen: true,
			NoSigs:     true,
			// fsync before every ack: a 2xx must survive kill -9.
			SyncAlways:         true,
			JetStreamMaxMemory: 64 << 20,
		})
		if err != nil {
			return fmt.Errorf("embedded nats: %w", err)
		}
		srv.SetLoggerV2(&natsLogger{s.log.With("component", "nats")}, false, false, false)
		srv.Start()
		if !srv.ReadyForConnections(30 * time.Second) {
			srv.Shutdown()
			return errors.New("embedded nats: not ready after 30s")
		}
		s.srv = srv
		nc, err := nats.Connect("", append(opts, nats.InProcessServer(srv))...)
		if err != nil {
			return fmt.Errorf("embedded nats: connect: %w", err)
		}
		s.NC = nc
	}
	js, err := jetstream.New(s.NC)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	s.JS = js
	return nil
}

func (s *Store) openBuckets(ctx context.Context, cfg Config) error {
	replicas := max(cfg.Replicas, 1)
	kv, err := s.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      MetaBucket,
		Description: "nubo functions, versions, aliases, layers",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return fmt.Errorf("bucket %s: %w", MetaBucket, err)
	}
	s.Meta = kv
	obj, err := s.JS.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      CodeBucket,
		Description: "function and layer zips by SHA-256",
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return fmt.Errorf("bucket %s: %w", CodeBucket, err)
	}
	s.Code = obj
	return nil
}

// Close disconnects and stops the embedded server, waiting for it to finish.
func (s *Store) Close() {
	if s.NC != nil {
		s.NC.Drain()
		s.NC.Close()
	}
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
	}
	if s.lock != nil {
		s.lock.Close()
	}
}

type natsLogger struct{ l *slog.Logger }

func (n *natsLogger) Noticef(format string, v ...any) { n.l.Debug(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Warnf(format string, v ...any)   { n.l.Warn(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Fatalf(format string, v ...any)  { n.l.Error(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Errorf(format string, v ...any)  { n.l.Error(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Debugf(format string, v ...any)  { n.l.Debug(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Tracef(format string, v ...any)  {}
