// Package agentproto is the framed protocol between the host (package env)
// and the agent that runs inside every execution environment (package
// agent). The same protocol runs over an inherited socketpair (namespace
// sandbox, process backend) and over virtio-serial or vsock (microVM).
//
// A frame is
//
//	type:1 | headerLen:4 (big endian) | bodyLen:4 | header (JSON) | body (raw bytes)
//
// Payloads travel as the raw body so a 6 MB event is never base64-encoded or
// copied into JSON. Frames are at most MaxHeader + MaxBody bytes; a peer that
// sends more is broken and the connection is dropped.
//
// Conversation:
//
//	host → agent   Start (once), Invoke, Shutdown (an Invoke may follow
//	               Start at once: the agent takes it after init)
//	agent → host   Ready (agent up), InitDone | InitError (after Start and
//	               after every runtime restart), Result (one per Invoke),
//	               Idle (after a Result, once the runtime and extensions are
//	               done, unless the next Invoke comes within IdleDelay),
//	               Log (runtime output, any time), ShutdownDone
//
// In a namespace sandbox, nubo serve runs the agent's supervising half
// itself (package agent's Supervise) and the sandbox runs only its keeper
// (Keep), which starts, signals and reaps processes. The two speak the
// same framing over the sandbox's socketpair:
//
//	keeper → serve  one byte carrying the Runtime API's listener and the
//	                output pipes' read ends (SCM_RIGHTS; see agent's
//	                handover), then Ready, Spawned (one per Spawn), Exited
//	serve → keeper  Spawn, Signal
package agentproto

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/nubo-dev/nubo/internal/rawio"
)

// Type of a frame.
type Type uint8

// Frame types.
const (
	TStart Type = iota + 1
	TInvoke
	TShutdown
	TReady
	TInitDone
	TInitError
	TResult
	TLog
	TShutdownDone
	// TIdle follows a Result once the runtime and extensions have finished
	// the invoke phase: the environment may be frozen.
	TIdle
	// TChunk carries part of a streamed response, ahead of its Result.
	TChunk
	// Between nubo serve and a sandbox's keeper (see the package doc).
	TSpawn
	TSpawned
	TExited
	TSignal
)

// IdleDelay is how long the agent holds back an Idle: an environment in
// steady use gets its next Invoke sooner and never needs one (the host
// freezes only after a longer idle time), which saves a frame each way per
// invocation. The host learns which invocation an Idle concludes from its
// request id, so one that crosses the next Invoke is harmless.
const IdleDelay = 20 * time.Millisecond

func (t Type) String() string {
	switch t {
	case TStart:
		return "Start"
	case TInvoke:
		return "Invoke"
	case TShutdown:
		return "Shutdown"
	case TReady:
		return "Ready"
	case TInitDone:
		return "InitDone"
	case TInitError:
		return "InitError"
	case TResult:
		return "Result"
	case TLog:
		return "Log"
	case TShutdownDone:
		return "ShutdownDone"
	case TIdle:
		return "Idle"
	case TChunk:
		return "Chunk"
	case TSpawn:
		return "Spawn"
	case TSpawned:
		return "Spawned"
	case TExited:
		return "Exited"
	case TSignal:
		return "Signal"
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// Limits of one frame.
const (
	MaxHeader = 1 << 20
	// MaxBody covers a 6 MB payload plus slack; larger responses are cut by
	// the Runtime API before they get here, and streamed ones come in
	// Chunk frames of at most 32 KiB.
	MaxBody = 7 << 20
)

// Start tells the agent how to run the function's runtime.
type Start struct {
	// Argv and Env start the runtime process; Dir is its working directory.
	Argv []string `json:"argv"`
	Env  []string `json:"env"`
	Dir  string   `json:"dir"`
	// UID and GID the runtime and extensions run as (0 = agent's own).
	UID int `json:"uid,omitempty"`
	GID int `json:"gid,omitempty"`
	// ExtensionsDir holds external extensions to start before the runtime.
	ExtensionsDir string `json:"extensionsDir,omitempty"`
	// RuntimeAPI is the address the Runtime API listens on (host:port).
	RuntimeAPI string `json:"runtimeApi"`
	// InitTimeoutMs bounds the init phase.
	InitTimeoutMs int64 `json:"initTimeoutMs"`
	// Function identity, reported to extensions on register.
	FunctionName    string `json:"functionName"`
	FunctionVersion string `json:"functionVersion"`
	Handler         string `json:"handler"`
	AccountID       string `json:"accountId"`
}

// Invoke is one invocation; the payload is the frame body.
type Invoke struct {
	RequestID string `json:"requestId"`
	// DeadlineMs is the epoch-millisecond deadline. 0 marks an invocation
	// sent right behind Start: its deadline is TimeoutMs from when the
	// agent starts it, once init is over.
	DeadlineMs         int64  `json:"deadlineMs"`
	InvokedFunctionARN string `json:"invokedFunctionArn"`
	TraceID            string `json:"traceId,omitempty"`
	ClientContext      string `json:"clientContext,omitempty"`
	CognitoIdentity    string `json:"cognitoIdentity,omitempty"`
	TenantID           string `json:"tenantId,omitempty"`
	// TimeoutMs is the function timeout, for the Sandbox.Timedout message.
	TimeoutMs int64 `json:"timeoutMs"`
	// Stream asks for a response the runtime streams to be sent as it
	// comes, in Chunk frames before the Result (InvokeWithResponseStream),
	// up to MaxStreamedResponse; without it the response is whole in the
	// Result, up to 6 MB.
	Stream bool `json:"stream,omitempty"`
}

// MaxStreamedResponse is the most a streamed response may carry.
const MaxStreamedResponse = 200 << 20

// Chunk is part of a streamed response; the bytes are the frame body.
type Chunk struct {
	RequestID   string `json:"requestId"`
	ContentType string `json:"contentType,omitempty"`
}

// Result answers one Invoke; the response payload is the frame body.
type Result struct {
	RequestID     string `json:"requestId"`
	FunctionError bool   `json:"functionError,omitempty"`
	ErrorType     string `json:"errorType,omitempty"`
	ContentType   string `json:"contentType,omitempty"`
	// Reset says the runtime was killed (timeout, exit, OOM) and will init
	// again before the next invocation.
	Reset bool `json:"reset,omitempty"`
	// InitDurationMs is set when this invocation had to (re)run init first.
	InitDurationMs float64 `json:"initDurationMs,omitempty"`
}

// InitDone reports a finished init phase.
type InitDone struct {
	DurationMs float64 `json:"durationMs"`
}

// InitError reports a failed init; the error payload is the frame body.
type InitError struct {
	ErrorType  string  `json:"errorType"`
	DurationMs float64 `json:"durationMs"`
}

// Shutdown asks the agent to stop everything.
type Shutdown struct {
	Reason     string `json:"reason"` // spindown | timeout | failure
	DeadlineMs int64  `json:"deadlineMs"`
}

// Idle says the invoke phase of RequestID is over.
type Idle struct {
	RequestID string `json:"requestId"`
}

// Log carries runtime output; the bytes are the frame body.
type Log struct {
	Stream string `json:"stream"` // stdout | stderr | platform
}

// Spawn asks the keeper to start a process (the runtime or an extension)
// in its own process group, with the output pipes as its stdout and
// stderr; ID names it in what follows.
type Spawn struct {
	ID   int      `json:"id"`
	Name string   `json:"name"`
	Argv []string `json:"argv"`
	Env  []string `json:"env"`
	Dir  string   `json:"dir"`
	UID  int      `json:"uid,omitempty"`
	GID  int      `json:"gid,omitempty"`
}

// Spawned answers a Spawn: Error says why the process did not start.
type Spawned struct {
	ID    int    `json:"id"`
	Pid   int    `json:"pid,omitempty"`
	Error string `json:"error,omitempty"`
}

// Exited says a spawned process ended; Reason is worded as Go's
// os.ProcessState words it ("exit status 2", "signal: killed").
type Exited struct {
	ID     int    `json:"id"`
	Reason string `json:"reason"`
}

// Signal asks the keeper to send a signal to a spawned process's group.
type Signal struct {
	ID     int `json:"id"`
	Signal int `json:"signal"`
}

// Frame is one decoded frame.
type Frame struct {
	Type   Type
	Header json.RawMessage
	Body   []byte
}

// Decode unmarshals the frame header into v.
func (f *Frame) Decode(v any) error {
	if len(f.Header) == 0 {
		return nil
	}
	return json.Unmarshal(f.Header, v)
}

// ErrFrameTooLarge is returned for a frame over the limits.
var ErrFrameTooLarge = errors.New("agentproto: frame too large")

// Conn sends and receives frames. Send is safe for concurrent use;
// Receive must be called from one goroutine.
type Conn struct {
	r  *bufio.Reader
	w  io.Writer
	mu sync.Mutex
	c  io.Closer
}

// NewConn wraps a bidirectional stream. A non-blocking socket or pipe
// (the namespace sandbox's socketpair, on both sides) is read and written
// with raw system calls: most of an invocation's thread switches
// otherwise (package rawio).
func NewConn(rw io.ReadWriteCloser) *Conn {
	rw = rawio.WrapFile(rw)
	return &Conn{r: bufio.NewReaderSize(rw, 64<<10), w: rw, c: rw}
}

// Send writes one frame. A small frame is built in one buffer, its header
// appended right after the prefix, and written at once: one write keeps
// it in one packet on the socket.
func (c *Conn) Send(t Type, header any, body []byte) error {
	small := len(body) < 32<<10
	size := 9 + 256
	if small {
		size += len(body)
	}
	buf, err := appendHeader(make([]byte, 9, size), header)
	if err != nil {
		return err
	}
	hl := len(buf) - 9
	if hl > MaxHeader || len(body) > MaxBody {
		return ErrFrameTooLarge
	}
	buf[0] = byte(t)
	binary.BigEndian.PutUint32(buf[1:5], uint32(hl))
	binary.BigEndian.PutUint32(buf[5:9], uint32(len(body)))
	c.mu.Lock()
	defer c.mu.Unlock()
	if small && hl+len(body) < 32<<10 {
		_, err := c.w.Write(append(buf, body...))
		return err
	}
	if _, err := c.w.Write(buf); err != nil {
		return err
	}
	_, err = c.w.Write(body)
	return err
}

// appendHeader appends header's JSON to b: appended by the header itself
// where it can (see appender), else by json.Marshal; nothing for nil.
func appendHeader(b []byte, header any) ([]byte, error) {
	if a, ok := header.(appender); ok {
		if out, ok := a.appendJSON(b); ok {
			return out, nil
		}
	}
	if header == nil {
		return b, nil
	}
	hb, err := json.Marshal(header)
	if err != nil {
		return nil, err
	}
	return append(b, hb...), nil
}

// Receive reads the next frame.
func (c *Conn) Receive() (*Frame, error) {
	var pre [9]byte
	if _, err := io.ReadFull(c.r, pre[:]); err != nil {
		return nil, err
	}
	hl := binary.BigEndian.Uint32(pre[1:5])
	bl := binary.BigEndian.Uint32(pre[5:9])
	if hl > MaxHeader || bl > MaxBody {
		return nil, ErrFrameTooLarge
	}
	f := &Frame{Type: Type(pre[0])}
	buf := make([]byte, int(hl)+int(bl))
	if _, err := io.ReadFull(c.r, buf); err != nil {
		return nil, fmt.Errorf("agentproto: truncated %s frame: %w", f.Type, err)
	}
	f.Header = buf[:hl:hl]
	f.Body = buf[hl:]
	return f, nil
}

// Close closes the underlying stream.
func (c *Conn) Close() error { return c.c.Close() }
