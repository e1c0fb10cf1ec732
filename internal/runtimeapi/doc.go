// Package runtimeapi serves the Lambda Runtime API and Extensions API that
// every execution environment exposes on AWS_LAMBDA_RUNTIME_API (nubo's agent
// listens on 127.0.0.1:9001). It owns the HTTP wire behaviour seen by
// runtimes (aws-lambda-go, nubo's Python and Node clients, custom bootstraps)
// and extensions, and the lifecycle rules that tie them together. It knows
// nothing about how processes are started or how invocations reach the agent:
// the agent calls WaitInit, Invoke, WaitIdle and Shutdown, and reports process
// deaths through RuntimeExited and ExtensionExited. Serve speaks HTTP/1.1
// with a small server of its own (wire.go), written for the few requests a
// runtime sends per invocation; Handler gives the same routes to tests.
//
// The agent drives one environment like this:
//
//	s := runtimeapi.New(opts); go s.Serve(ctx, l)
//	launch /opt/extensions/*; s.WaitExtensionsRegistered(ctx)
//	start the runtime;        s.WaitInit(ctx)  // 10 s init limit in ctx
//	for each invocation:      s.Invoke(ctx, inv) → Result; s.WaitIdle(ctx)
//	at the end:               s.Shutdown(ctx, "spindown", deadline)
//	process deaths:           s.RuntimeExited(status), s.ExtensionExited(name, status)
//	after a timeout or crash: kill, s.ResetRuntime(), start the runtime again
//
// # Runtime state machine
//
// One runtime process at a time ("generation"); ResetRuntime starts a new one.
// The state names are the ones AWS uses in InvalidStateTransition messages.
//
//	Started ──/next──► Ready ──invocation delivered──► Running
//	   │                 ▲                               │ /response or /error
//	   │ /init/error     │ /next                         ▼
//	   ▼                 └────── RuntimeResponseSentState ◄─ InvocationResponse
//	InitError                                              (body being read)
//
//	any state ──RuntimeExited──► Exited ──ResetRuntime──► Started
//
// /response and /error are answered 403 InvalidStateTransition while the
// runtime has not called /next yet (Started, InitError) or is Exited; in every
// other state a request id other than the one in flight gets 400
// InvalidRequestID, which also covers duplicate responses.
//
// # Invariants
//
//   - At most one invocation is in flight; Invoke refuses a second one with
//     ErrBusy, including while a timed-out invocation is still held by the
//     runtime (the agent kills the runtime and calls ResetRuntime).
//   - An invocation is handed to exactly one /next request, chosen under the
//     server mutex; a /next whose client has gone away never claims one, so an
//     invocation is never delivered twice and never lost to a dead connection.
//   - A newer /next (runtime or extension) supersedes an older one still
//     waiting: the older gets 403 and the newer waits. This keeps a runtime that
//     retried after a dropped connection from being locked out.
//   - Request bodies are read through a limit (MaxResponseBytes for results,
//     64 KiB for registrations); nothing buffers unbounded input.
//   - Every blocking handler returns when its request context is cancelled.
//
// # Extensions
//
// As in the Runtime Interface Emulator, an extension whose name is listed in
// Options.Extensions is external (a process the agent launched from
// /opt/extensions; it may subscribe to INVOKE and SHUTDOWN and outlives
// runtime restarts). Any other name is internal: registered by the runtime
// process itself (aws-lambda-go's GoLangEnableSIGTERM), limited to INVOKE, and
// dropped when that runtime process exits or is reset. Registration is open
// while the current runtime is in Started. Init is complete when the runtime
// has called /next and every registered extension has called event/next once;
// an internal extension registered with no events therefore still has to call
// event/next, as in Lambda. At most ten extensions may register.
//
// The invoke phase ends when the runtime has answered and called /next again
// and every extension sent the INVOKE event has called event/next again.
// Invoke returns the result as soon as the runtime answers (as Lambda returns
// the response to the caller), and WaitIdle waits for the rest of the phase,
// so a slow extension delays freezing the environment but never the caller.
package runtimeapi
