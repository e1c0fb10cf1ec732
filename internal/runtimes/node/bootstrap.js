// nubo's runtime interface client for Node.js Lambda functions.
//
// Started by the execution environment as `node bootstrap.js`. It loads the
// handler named by _HANDLER from LAMBDA_TASK_ROOT, then serves invocations
// from the Runtime API at AWS_LAMBDA_RUNTIME_API one at a time, forever: the
// host stops the process. It follows the conventions of AWS's managed Node.js
// runtimes so that unmodified functions behave as they do on Lambda:
//
//   - Handler "dir/file.a.b": file is looked up under LAMBDA_TASK_ROOT/dir as
//     file, file.js (CommonJS, or ESM under a package.json "type": "module"),
//     file.mjs, file.cjs, then through Node's resolution; a.b is a property
//     path into the module's exports.
//   - Async handlers (returning a promise) complete when it settles.
//   - Callback handlers complete when callback(err, result) is called; with
//     context.callbackWaitsForEmptyEventLoop true (the default) the result is
//     posted only once the event loop has drained (Node's 'beforeExit'),
//     at once otherwise. context.succeed/fail/done post at once.
//   - A non-async handler that neither calls back nor returns a promise
//     answers null once the event loop drains; an async one whose promise
//     never settles fails with Runtime.NodeJsExit.
//   - An uncaught exception or unhandled rejection fails the current
//     invocation (or init) and exits the process; the host restarts it.
//   - console.* lines are prefixed "<ISO time>\t<request id>\t<LEVEL>\t".
//   - awslambda.streamifyResponse(handler) marks a response streaming
//     handler, called as handler(event, responseStream, context): what it
//     writes to responseStream (a Writable, with setContentType) is posted
//     as it is written (Lambda-Runtime-Function-Response-Mode: streaming);
//     a rejection after writing ends the stream with the error trailers;
//     a promise that never settles holds the runtime until the invocation
//     times out.
//     awslambda.HttpResponseStream.from(stream, prelude) writes the prelude
//     (statusCode, headers, cookies) a function URL reads first.
//
// CommonJS, node: builtins only; runs on Node.js 18 and later.
'use strict';

// The V8 flags node was started with (--expose-gc and the heap's sizes, as
// Lambda starts it) have done their work once the heap exists: the heap
// keeps its limits and global.gc stays. Left set, they also make V8 refuse
// the code cache node ships for its built-in modules (the cache is keyed by
// the flags), so every require('node:...') compiled from source: 9 ms of
// each cold start with this file's own modules, 20 ms with those an AWS SDK
// loads (docs/performance.md, session 9). They go back to V8's defaults
// before anything is loaded. What is reset is the flag, wherever its value
// came from: a NODE_OPTIONS flag of the same name as one of them is reset
// too (its value mattered only for the heap, which is made by then, and
// the command line's overrode it), while NODE_OPTIONS flags of other names
// stay.
//
// A worker thread's isolate is made later, and would take V8's default
// heap sizes (from the host's memory) rather than the flags', which on
// Lambda apply to every isolate: sizeWorkerHeaps gives workers the same
// limits. --expose-gc cannot follow them (a worker's execArgv refuses V8
// flags): global.gc is the main thread's only.
(function restoreV8Defaults() {
  const defaults = {
    '--expose-gc': '--no-expose-gc',
    '--max-semi-space-size': '--max-semi-space-size=0',
    '--max-old-space-size': '--max-old-space-size=0',
  };
  const reset = [];
  let semiSpaceMb = 0;
  let oldSpaceMb = 0;
  for (const a of process.execArgv) {
    const [name, value] = a.split('=');
    if (!Object.hasOwn(defaults, name)) continue;
    reset.push(defaults[name]);
    // The last of a repeated flag is the one V8 keeps.
    if (name === '--max-semi-space-size') semiSpaceMb = Number(value) || 0;
    if (name === '--max-old-space-size') oldSpaceMb = Number(value) || 0;
  }
  if (reset.length === 0) return;
  setV8Flags(reset.join(' '));
  // Loaded after the reset, so from the code cache.
  if (semiSpaceMb > 0 || oldSpaceMb > 0) sizeWorkerHeaps(semiSpaceMb, oldSpaceMb);
})();

// setV8Flags sets V8 flags as v8.setFlagsFromString does, through the
// binding that function calls: node:v8 itself loads the stream modules
// (for heap snapshots), which the flags still set would make it compile
// from source, 3 ms of every cold start (docs/performance.md, session 9).
// process.binding is deprecated, and warns (not here: the warning is held
// back for the call); where a node no longer has it, node:v8 is used.
function setV8Flags(flags) {
  let binding;
  const quiet = process.noDeprecation;
  process.noDeprecation = true;
  try {
    binding = process.binding('v8');
  } catch (_) {
    binding = undefined;
  } finally {
    process.noDeprecation = quiet;
  }
  if (binding && typeof binding.setFlagsFromString === 'function') {
    binding.setFlagsFromString(flags);
  } else {
    require('node:v8').setFlagsFromString(flags);
  }
}

// sizeWorkerHeaps makes new Worker(...) default its resourceLimits to the
// sizes the start flags gave the main thread's heap. V8 makes a young
// generation of three times the semi-space size (two semi-spaces and the
// new large-object space), so a worker reports the heap_size_limit it
// would have had under the flags (measured on Node 20 from 128 to
// 10240 MB). A caller's own limits are kept, and its options are not
// changed. The class replaces Worker on worker_threads' exports, which
// require('worker_threads'), require('node:worker_threads') and an ES
// module's import all read.
function sizeWorkerHeaps(semiSpaceMb, oldSpaceMb) {
  const workerThreads = require('node:worker_threads');
  const Base = workerThreads.Worker;
  workerThreads.Worker = class Worker extends Base {
    constructor(filename, options) {
      if (options === undefined || (typeof options === 'object' && options !== null)) {
        const limits = Object.assign({}, options && options.resourceLimits);
        // Node reads a limit only if it is a number.
        if (oldSpaceMb > 0 && typeof limits.maxOldGenerationSizeMb !== 'number') {
          limits.maxOldGenerationSizeMb = oldSpaceMb;
        }
        if (semiSpaceMb > 0 && typeof limits.maxYoungGenerationSizeMb !== 'number') {
          limits.maxYoungGenerationSizeMb = 3 * semiSpaceMb;
        }
        options = Object.assign({}, options, { resourceLimits: limits });
      }
      super(filename, options);
    }
  };
}

const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const util = require('node:util');
const Module = require('node:module');

const API_PREFIX = '/2018-06-01/runtime';
const ERROR_TYPE_HEADER = 'Lambda-Runtime-Function-Error-Type';
const ERROR_BODY_TRAILER = 'Lambda-Runtime-Function-Error-Body';
const STREAMING = Symbol.for('aws.lambda.runtime.handler.streaming');
const HTTP_INTEGRATION_TYPE = 'application/vnd.awslambda.http-integration-response';

// awslambda is the global Lambda's Node.js runtimes give functions.
globalThis.awslambda = {
  streamifyResponse(handler) {
    handler[STREAMING] = 'response';
    return handler;
  },
  HttpResponseStream: {
    // from writes the HTTP prelude, then eight zero bytes, ahead of the
    // body.
    from(stream, prelude) {
      stream.setContentType(HTTP_INTEGRATION_TYPE);
      stream.write(JSON.stringify(prelude || {}));
      stream.write(Buffer.alloc(8));
      return stream;
    },
  },
};

// --- errors ---------------------------------------------------------------

function runtimeErrorClass(name) {
  const C = class extends Error {};
  Object.defineProperty(C.prototype, 'name', {
    value: 'Runtime.' + name,
    writable: true,
    configurable: true,
  });
  return C;
}

const HandlerNotFound = runtimeErrorClass('HandlerNotFound');
const MalformedHandlerName = runtimeErrorClass('MalformedHandlerName');
const NodeJsExit = runtimeErrorClass('NodeJsExit');

// The wrapped error's text, "Error: Cannot find module ...", becomes the
// message, as in AWS's runtime.
class ImportModuleError extends Error {
  constructor(cause) {
    super(String(cause));
  }
}
Object.defineProperty(ImportModuleError.prototype, 'name', {
  value: 'Runtime.ImportModuleError',
  writable: true,
  configurable: true,
});

class UserCodeSyntaxError extends Error {
  constructor(cause) {
    super(String(cause));
    // The original stack points at the offending source line.
    if (typeof cause.stack === 'string') this.stack = cause.stack;
  }
}
Object.defineProperty(UserCodeSyntaxError.prototype, 'name', {
  value: 'Runtime.UserCodeSyntaxError',
  writable: true,
  configurable: true,
});

class UnhandledPromiseRejection extends Error {
  constructor(reason, promise) {
    super(reason);
    this.reason = reason;
    this.promise = promise;
  }
}
Object.defineProperty(UnhandledPromiseRejection.prototype, 'name', {
  value: 'Runtime.UnhandledPromiseRejection',
  writable: true,
  configurable: true,
});

function looksLikeError(v) {
  return (
    v &&
    typeof v.name === 'string' &&
    v.name &&
    typeof v.message === 'string' &&
    v.message &&
    typeof v.stack === 'string' &&
    v.stack
  );
}

// errorPayload builds the document posted to /error. Anything can be thrown
// or passed to a callback: non-errors are reported by their type.
function errorPayload(err) {
  try {
    if (util.types.isNativeError(err) || looksLikeError(err)) {
      return {
        errorType: err.name,
        errorMessage: err.message,
        trace: err.stack.split('\n'),
      };
    }
    return { errorType: typeof err, errorMessage: String(err), trace: [] };
  } catch (_) {
    return {
      errorType: 'handled',
      errorMessage:
        'callback called with Error argument, but there was a problem while retrieving one or more of its message, name, and stack',
    };
  }
}

function intoError(err) {
  return err instanceof Error ? err : new Error(err);
}

// formatForLog renders an error as AWS's "\t{json}" log suffix, keeping the
// non-enumerable name, message and stack.
function formatForLog(err) {
  const replacer = (_k, v) => {
    if (!(v instanceof Error)) return v;
    const out = Object.assign(
      { errorType: v.name, errorMessage: v.message, code: v.code },
      v,
    );
    if (typeof v.stack === 'string') out.stack = v.stack.split('\n');
    return out;
  };
  try {
    return '\t' + JSON.stringify(err, replacer);
  } catch (_) {
    return '\t' + JSON.stringify(errorPayload(err));
  }
}

// --- logging --------------------------------------------------------------

let currentRequestId;
let currentTenantId;

const LEVELS = { TRACE: 1, DEBUG: 2, INFO: 3, WARN: 4, ERROR: 5, FATAL: 6 };
const jsonLogs = (process.env.AWS_LAMBDA_LOG_FORMAT || '').toUpperCase() === 'JSON';

function jsonLine(time, level, params) {
  const doc = { timestamp: time, level, requestId: currentRequestId };
  if (currentTenantId !== undefined) doc.tenantId = currentTenantId;
  const errorReplacer = (_k, v) => {
    if (!(v instanceof Error)) return v;
    return Object.assign(
      {
        errorType: (v.constructor && v.constructor.name) || 'UnknownError',
        errorMessage: v.message,
        stackTrace: typeof v.stack === 'string' ? v.stack.split('\n') : v.stack,
      },
      v,
    );
  };
  if (params.length === 1) {
    doc.message = params[0];
    try {
      return JSON.stringify(doc, errorReplacer);
    } catch (_) {
      doc.message = util.format(params[0]);
      return JSON.stringify(doc);
    }
  }
  doc.message = util.format(...params);
  const err = params.find((p) => p instanceof Error);
  if (err) {
    doc.errorType = (err.constructor && err.constructor.name) || 'UnknownError';
    doc.errorMessage = err.message;
    doc.stackTrace = typeof err.stack === 'string' ? err.stack.split('\n') : [];
  }
  return JSON.stringify(doc);
}

function writeLog(level, params) {
  const time = new Date().toISOString();
  const line = jsonLogs
    ? jsonLine(time, level, params)
    : `${time}\t${currentRequestId}\t${level}\t${util.format(...params)}`;
  // One line per call: a collector splitting on LF keeps a multi-line
  // message in one event, as on Lambda.
  process.stdout.write(line.replace(/\n/g, '\r') + '\n');
}

function patchConsole() {
  const threshold =
    LEVELS[(process.env.AWS_LAMBDA_LOG_LEVEL || '').toUpperCase()] || LEVELS.TRACE;
  const make = (level) =>
    LEVELS[level] >= threshold ? (...params) => writeLog(level, params) : () => {};
  console.trace = make('TRACE');
  console.debug = make('DEBUG');
  console.info = make('INFO');
  console.log = console.info;
  console.warn = make('WARN');
  console.error = make('ERROR');
  console.fatal = make('FATAL');
}

function logError(what, err) {
  if (jsonLogs) {
    console.error(intoError(err));
  } else {
    console.error(what, formatForLog(intoError(err)));
  }
}

// --- Runtime API ----------------------------------------------------------

// The runtime speaks HTTP/1.1 to the Runtime API itself, over node:net:
// loading node:http and going through its client cost 3.5 ms of every
// cold start in nubo and a twentieth of a warm invocation, for the little
// the runtime asks of it (docs/performance.md, session 9; AWS's runtime
// avoids node:http too). The server is nubo's, on loopback, but its answers are
// read as any HTTP/1.1 peer may send them: cut at any byte, sized by
// Content-Length, chunked, or ended by closing the connection.

const apiAddress = process.env.AWS_LAMBDA_RUNTIME_API || '';
const [apiHost, apiPort] = (() => {
  const i = apiAddress.lastIndexOf(':');
  return i < 0 ? [apiAddress, 80] : [apiAddress.slice(0, i), parseInt(apiAddress.slice(i + 1), 10)];
})();

// The longest answer head (status line and headers, or a chunked body's
// trailers) read; a longer one is refused. Any line counts against it, so
// a peer sending no line end cannot make the runtime buffer without end.
const MAX_ANSWER_HEAD = 1 << 20;

const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const LIST_CLOSE = /(?:^|,)[ \t]*close[ \t]*(?:,|$)/i;
const LIST_KEEP_ALIVE = /(?:^|,)[ \t]*keep-alive[ \t]*(?:,|$)/i;
const LAST_CHUNKED = /(?:^|,)[ \t]*chunked[ \t]*$/i;

function malformed(what, text) {
  const shown = text === undefined ? '' : ': ' + JSON.stringify(text.slice(0, 100));
  return new Error(`Runtime API answer is malformed: ${what}${shown}`);
}

// AnswerReader parses one HTTP/1.1 answer from its bytes, fed in whatever
// pieces they arrive. headers is shaped as node:http's res.headers: names
// lower-cased, a repeated header's values joined with ", ", values read
// as latin1. feed and end throw an Error on a malformed answer.
class AnswerReader {
  constructor() {
    // status, header, body (Content-Length bytes or one chunk's), size,
    // chunkEnd, trailer, rest (until the connection closes), done.
    this.state = 'status';
    this.received = false;
    this.line = []; // the pieces of the line read so far
    this.lineLength = 0;
    this.headLength = 0; // of the head's lines before this one
    this.status = 0;
    this.http10 = false;
    this.headers = Object.create(null);
    this.keepAlive = true;
    this.chunked = false;
    this.left = 0; // bytes of the body, or of the chunk, still to come
    this.body = [];
  }

  get done() {
    return this.state === 'done';
  }

  // feed reads the next bytes of the answer. It returns how many of them
  // belong to it: the rest, if any, came after its end.
  feed(b) {
    this.received = true;
    let i = 0;
    while (i < b.length && this.state !== 'done') {
      if (this.state === 'body') {
        const n = Math.min(this.left, b.length - i);
        this.body.push(b.subarray(i, i + n));
        this.left -= n;
        i += n;
        if (this.left === 0) this.state = this.chunked ? 'chunkEnd' : 'done';
      } else if (this.state === 'rest') {
        this.body.push(b.subarray(i));
        i = b.length;
      } else {
        const nl = b.indexOf(10, i);
        const end = nl < 0 ? b.length : nl + 1;
        this.line.push(b.subarray(i, end));
        this.lineLength += end - i;
        i = end;
        // A chunk's size line and line end are not part of a head.
        const inHead = this.state !== 'size' && this.state !== 'chunkEnd';
        if ((inHead ? this.headLength : 0) + this.lineLength > MAX_ANSWER_HEAD) {
          throw malformed(`head or line longer than ${MAX_ANSWER_HEAD} bytes`);
        }
        if (nl >= 0) {
          const raw = Buffer.concat(this.line, this.lineLength).toString('latin1');
          if (inHead) this.headLength += this.lineLength;
          this.line = [];
          this.lineLength = 0;
          // CRLF ends a line; a bare LF is taken too, as most clients do.
          this.readLine(raw.slice(0, raw.length > 1 && raw[raw.length - 2] === '\r' ? -2 : -1));
        }
      }
    }
    return i;
  }

  readLine(line) {
    switch (this.state) {
      case 'status': {
        const m = /^HTTP\/1\.([01]) ([1-9]\d\d)(?: |$)/.exec(line);
        if (!m) throw malformed('bad status line', line);
        this.http10 = m[1] === '0';
        this.status = Number(m[2]);
        this.headers = Object.create(null);
        this.state = 'header';
        return;
      }
      case 'header': {
        if (line === '') {
          this.headEnd();
          return;
        }
        const colon = line.indexOf(':');
        const name = line.slice(0, Math.max(colon, 0));
        if (!HEADER_NAME.test(name)) throw malformed('bad header line', line);
        const key = name.toLowerCase();
        const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '');
        this.headers[key] = key in this.headers ? `${this.headers[key]}, ${value}` : value;
        return;
      }
      case 'size': {
        const m = /^([0-9a-fA-F]{1,12})[ \t]*(?:;|$)/.exec(line);
        if (!m) throw malformed('bad chunk size', line);
        this.left = parseInt(m[1], 16);
        this.state = this.left === 0 ? 'trailer' : 'body';
        return;
      }
      case 'chunkEnd':
        if (line !== '') throw malformed('chunk longer than its size', line);
        this.state = 'size';
        return;
      case 'trailer':
        // Trailers are read past: the runtime has no use for them.
        if (line === '') this.state = 'done';
        return;
    }
  }

  // headEnd picks how the body is delimited (RFC 9112 §6.3).
  headEnd() {
    const h = this.headers;
    if (this.status < 200) {
      // An interim answer (100 Continue, 103 Early Hints): the real one
      // follows.
      this.state = 'status';
      return;
    }
    const conn = h.connection || '';
    this.keepAlive = this.http10 ? LIST_KEEP_ALIVE.test(conn) : !LIST_CLOSE.test(conn);
    this.headLength = 0;
    if (this.status === 204 || this.status === 304) {
      this.state = 'done';
    } else if (h['transfer-encoding'] !== undefined) {
      if (LAST_CHUNKED.test(h['transfer-encoding'])) {
        this.chunked = true;
        this.state = 'size';
      } else {
        this.keepAlive = false;
        this.state = 'rest';
      }
    } else if (h['content-length'] !== undefined) {
      // Repeated, it must say the same each time.
      const lengths = h['content-length'].split(',').map((s) => s.trim());
      if (!/^\d{1,15}$/.test(lengths[0]) || lengths.some((s) => s !== lengths[0])) {
        throw malformed('bad Content-Length', h['content-length']);
      }
      this.left = Number(lengths[0]);
      this.state = this.left > 0 ? 'body' : 'done';
    } else {
      this.keepAlive = false;
      this.state = 'rest';
    }
  }

  // end is told that the connection has closed: that ends an answer
  // without a length, and cuts any other short.
  end() {
    if (this.state === 'rest') {
      this.state = 'done';
      return;
    }
    if (!this.received) {
      // The code node:http gives its "socket hang up".
      const err = new Error('Runtime API closed the connection without answering');
      err.code = 'ECONNRESET';
      throw err;
    }
    throw malformed('connection closed before its end');
  }

  answer() {
    return { status: this.status, headers: this.headers, body: Buffer.concat(this.body) };
  }
}

// The runtime keeps one connection to the Runtime API and makes one
// request at a time on it. It goes from an answer straight to the next
// /next, which is in flight while the environment is frozen: the
// connection is never idle for more than a moment. A request on a kept
// connection that the server had closed fails before any answer
// (ECONNRESET, EPIPE, or the connection closing), and goes once more on a
// new one.
//
// apiConn is the kept connection, or null. apiBusy is set while a request
// has it; apiWaiting holds those that come meanwhile, in order. Only an
// uncaught exception's error post can come then: it waits for the request
// in flight, as it did behind node:http's one-socket agent.
let apiConn = null;
let apiBusy = false;
const apiWaiting = [];

function acquireApi(start) {
  if (apiBusy) {
    apiWaiting.push(start);
  } else {
    apiBusy = true;
    start();
  }
}

function releaseApi() {
  const next = apiWaiting.shift();
  if (next) next();
  else apiBusy = false;
}

// connect opens a connection to the Runtime API. Its events go to the
// exchange in progress on it, if any.
function connect() {
  const sock = net.connect({ host: apiHost, port: apiPort, noDelay: true });
  const conn = { sock, exchange: null, error: null };
  sock.on('data', (b) => {
    if (conn.exchange) {
      conn.exchange.data(b);
    } else {
      // Bytes nobody asked for: the connection is out of step.
      if (apiConn === conn) apiConn = null;
      sock.destroy();
    }
  });
  sock.on('drain', () => {
    if (conn.exchange) conn.exchange.drained();
  });
  sock.on('end', () => {
    if (apiConn === conn) apiConn = null;
  });
  sock.on('error', (err) => {
    conn.error = err;
  });
  sock.on('close', () => {
    if (apiConn === conn) apiConn = null;
    if (conn.exchange) conn.exchange.closed(conn.error);
  });
  return conn;
}

// exchange starts a request on the kept connection, or on a new one, and
// returns its handle. write(parts, cb, last) sends parts of the request
// (Buffers, or latin1 strings), last marking its end, and calls cb once
// the socket has taken them. onDone(err, answer) is called once the answer
// has been read, or the exchange failed; reused says whether the
// connection had been kept from an earlier one, answered whether any byte
// of the answer came.
function exchange(onDone) {
  // A kept connection already closing (destroyed, or ended by either side)
  // is not used, whether or not its 'close' has been handled yet. A FIN
  // not yet read cannot be seen here (the server closed the connection
  // just after answering /next, and the handler wrote at once): the
  // request fails before any answer, and call sends it again, but a
  // streamed response, whose bytes are not kept, fails.
  if (apiConn !== null && !usable(apiConn.sock)) {
    apiConn.sock.destroy();
    apiConn = null;
  }
  const reused = apiConn !== null;
  const conn = reused ? apiConn : (apiConn = connect());
  const sock = conn.sock;
  const reader = new AnswerReader();
  let drainWaiters = [];
  const ex = {
    reused,
    answered: false,
    sent: false,
    over: false,
    error: undefined,
  };

  // finish ends the exchange. The connection is kept for the next only if
  // both sides are through with this one and the answer allows it.
  const finish = (err, keep) => {
    ex.over = true;
    ex.error = err || undefined;
    conn.exchange = null;
    if (keep) {
      // An idle connection must not keep the event loop alive: its
      // draining is what ends a callback handler's invocation.
      sock.unref();
    } else {
      if (apiConn === conn) apiConn = null;
      sock.destroy();
    }
    const waiters = drainWaiters;
    drainWaiters = [];
    for (const cb of waiters) cb(ex.error);
    onDone(err, err ? undefined : reader.answer());
  };

  // Once the exchange is over, what is still written is dropped, and cb
  // gets the error it failed with, if any. Answered early (as to a body
  // too large), a request is not read on: the connection goes.
  ex.write = (parts, cb, last) => {
    if (last) ex.sent = true;
    if (ex.over) {
      if (cb) cb(ex.error);
      return;
    }
    let ok = true;
    sock.cork();
    for (const p of parts) ok = typeof p === 'string' ? sock.write(p, 'latin1') : sock.write(p);
    sock.uncork();
    if (!cb) return;
    if (ok) cb();
    else drainWaiters.push(cb);
  };
  ex.data = (b) => {
    ex.answered = true;
    let used;
    try {
      used = reader.feed(b);
    } catch (err) {
      finish(err, false);
      return;
    }
    // Bytes past the answer were not asked for: the connection is out of
    // step and goes.
    if (reader.done) finish(null, reader.keepAlive && ex.sent && used === b.length);
  };
  ex.drained = () => {
    const waiters = drainWaiters;
    drainWaiters = [];
    for (const cb of waiters) cb();
  };
  ex.closed = (err) => {
    if (!err) {
      try {
        reader.end();
      } catch (e) {
        err = e;
      }
    }
    finish(err, false);
  };

  conn.exchange = ex;
  sock.ref();
  return ex;
}

function usable(sock) {
  return !sock.destroyed && !sock.readableEnded && sock.writable;
}

// requestHead renders a request line and headers; the values are the
// runtime's own.
function requestHead(method, target, headers) {
  let head = `${method} ${target} HTTP/1.1\r\nHost: ${apiAddress}\r\n`;
  for (const name of Object.keys(headers)) head += `${name}: ${headers[name]}\r\n`;
  return head + '\r\n';
}

// call makes a request with a buffered body (a Buffer, or none) and
// resolves to its answer: { status, headers, body }.
function call(method, p, body, headers) {
  const h = Object.assign({}, headers);
  if (body) h['Content-Length'] = body.length;
  const head = requestHead(method, API_PREFIX + p, h);
  return new Promise((resolve, reject) => {
    const attempt = (retried) => {
      const ex = exchange((err, answer) => {
        if (err && !retried && ex.reused && !ex.answered && (err.code === 'ECONNRESET' || err.code === 'EPIPE')) {
          attempt(true);
          return;
        }
        releaseApi();
        if (err) reject(err);
        else resolve(answer);
      });
      ex.write(body ? [head, body] : [head], null, true);
    };
    acquireApi(() => attempt(false));
  });
}

async function post(p, bodyString, extraHeaders) {
  const body = Buffer.from(bodyString, 'utf8');
  const res = await call('POST', p, body, Object.assign({ 'Content-Type': 'application/json' }, extraHeaders));
  if (res.status !== 202) {
    process.stderr.write(`Runtime API ${p} answered ${res.status}: ${res.body.toString().slice(0, 200)}\n`);
  }
}

function errorTypeHeader(payload) {
  const t = payload.errorType;
  return typeof t === 'string' && /^[\x21-\x7e]+$/.test(t) ? { [ERROR_TYPE_HEADER]: t } : {};
}

// Like AWS's runtime, only an init error carries the error type header.
function postInvocationError(id, err) {
  return post(`/invocation/${encodeURIComponent(id)}/error`, JSON.stringify(errorPayload(err)));
}

function postInitError(err) {
  const payload = errorPayload(err);
  return post('/init/error', JSON.stringify(payload), errorTypeHeader(payload));
}

async function nextInvocation() {
  const res = await call('GET', '/invocation/next');
  if (res.status !== 200) {
    throw new Error(`Runtime API /next answered ${res.status}: ${res.body.toString().slice(0, 200)}`);
  }
  return res;
}

// --- handler loading --------------------------------------------------------

// A "type": "module" in the nearest package.json makes .js files ESM; the
// search stops at node_modules and at the root.
function packageIsModule(dir) {
  for (;;) {
    if (dir.endsWith('/node_modules')) return false;
    const pj = path.join(dir, 'package.json');
    if (fs.existsSync(pj)) {
      try {
        return JSON.parse(fs.readFileSync(pj, 'utf8')).type === 'module';
      } catch (e) {
        console.warn(`${pj} cannot be read, it will be ignored for ES module detection purposes.`, e);
        return false;
      }
    }
    const parent = path.dirname(dir);
    if (parent === dir) return false;
    dir = parent;
  }
}

function importFile(file) {
  // Required where used, though node has loaded url by the time this file
  // runs: deferring it saves nothing.
  return import(require('node:url').pathToFileURL(file).href);
}

async function loadModule(taskRoot, moduleRoot, name) {
  const base = path.resolve(taskRoot, moduleRoot, name);
  if (fs.existsSync(base)) return require(base);
  const esm = packageIsModule(path.dirname(base));
  if (fs.existsSync(base + '.js')) return esm ? importFile(base + '.js') : require(base + '.js');
  if (fs.existsSync(base + '.mjs')) return importFile(base + '.mjs');
  if (fs.existsSync(base + '.cjs')) return require(base + '.cjs');
  // Node's own resolution (node_modules, NODE_PATH) as a last resort; its
  // "Cannot find module" error is what AWS reports when nothing matches.
  return require(require.resolve(name, { paths: [taskRoot, moduleRoot] }));
}

async function loadHandler(taskRoot, spec) {
  if (spec.includes('..')) {
    throw new MalformedHandlerName(
      `'${spec}' is not a valid handler name. Use absolute paths when specifying root directories in handler names.`,
    );
  }
  const base = path.basename(spec);
  const moduleRoot = spec.substring(0, spec.indexOf(base));
  const m = /^([^.]*)\.(.*)$/.exec(base);
  if (!m) throw new MalformedHandlerName('Bad handler');
  const [, moduleName, propertyPath] = m;

  let app;
  try {
    app = await loadModule(taskRoot, moduleRoot, moduleName);
  } catch (e) {
    if (e instanceof SyntaxError) throw new UserCodeSyntaxError(e);
    if (e && e.code === 'MODULE_NOT_FOUND') throw new ImportModuleError(e);
    throw e;
  }
  const fn = propertyPath.split('.').reduce((o, k) => o && o[k], app);
  if (!fn) throw new HandlerNotFound(`${spec} is undefined or not exported`);
  if (typeof fn !== 'function') throw new HandlerNotFound(`${spec} is not a function`);
  return fn;
}

// Layers put packages in /opt/nodejs; Lambda's NODE_PATH lists them for
// require(). Node reads NODE_PATH once at start, hence _initPaths. Unlike
// Lambda's, the runtime directory itself is left out: it holds this file,
// which require('bootstrap') must not find.
function setDefaultNodePath(taskRoot) {
  if (process.env.NODE_PATH) return;
  const major = process.versions.node.split('.')[0];
  const runtimeDir = process.env.LAMBDA_RUNTIME_DIR || __dirname;
  process.env.NODE_PATH = [
    `/opt/nodejs/node${major}/node_modules`,
    '/opt/nodejs/node_modules',
    `${runtimeDir}/node_modules`,
    taskRoot,
  ].join(':');
  if (typeof Module._initPaths === 'function') Module._initPaths();
}

// --- invocation -------------------------------------------------------------

// Node calls 'beforeExit' each time the event loop drains; the listener
// decides what a drained loop means for the current invocation.
let beforeExit = () => {};

// fatal is what an uncaught exception or unhandled rejection does: fail
// init, or the current invocation once one runs, then exit.
let fatal = (err, code) => {
  postInitError(err).finally(() => process.exit(code));
};

function parseJsonHeader(value, name) {
  if (value === undefined) return undefined;
  try {
    return JSON.parse(value);
  } catch (err) {
    throw new Error(`Cannot parse ${name} as json: ${err.toString()}`);
  }
}

function contextFrom(headers, callbackContext) {
  const deadline = parseInt(headers['lambda-runtime-deadline-ms'], 10);
  return Object.assign(callbackContext, {
    functionVersion: process.env.AWS_LAMBDA_FUNCTION_VERSION,
    functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
    // A string, as in AWS's runtime.
    memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: process.env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
    clientContext: parseJsonHeader(headers['lambda-runtime-client-context'], 'ClientContext'),
    identity: parseJsonHeader(headers['lambda-runtime-cognito-identity'], 'CognitoIdentity'),
    invokedFunctionArn: headers['lambda-runtime-invoked-function-arn'],
    awsRequestId: headers['lambda-runtime-aws-request-id'],
    tenantId: headers['lambda-runtime-aws-tenant-id'],
    getRemainingTimeInMillis() {
      return deadline - Date.now();
    },
  });
}

// callbackContext builds the callback and context.succeed/fail/done of one
// invocation. Only the first completion counts.
function callbackContext(id, scheduleNext) {
  let reported = false;
  let waitForEmptyEventLoop = true;

  const postError = (err) => {
    logError('Invoke Error', err);
    postInvocationError(id, err).then(scheduleNext, crash);
  };
  const complete = (result) => {
    if (reported) {
      console.error('Invocation has already been reported as done. Cannot call complete more than once per invocation.');
      return;
    }
    reported = true;
    let body;
    try {
      body = JSON.stringify(result === undefined ? null : result);
    } catch (_) {
      postError(new Error('Unable to stringify response body'));
      return;
    }
    if (body === undefined) body = 'null';
    post(`/invocation/${encodeURIComponent(id)}/response`, body).then(scheduleNext, crash);
  };

  const callback = (err, result) => {
    beforeExit = () => {};
    if (err !== undefined && err !== null) {
      postError(err);
    } else if (!waitForEmptyEventLoop) {
      complete(result);
    } else {
      beforeExit = () => {
        beforeExit = () => {};
        setImmediate(() => complete(result));
      };
    }
  };
  const done = (err, result) => {
    beforeExit = () => {};
    if (err !== undefined && err !== null) postError(err);
    else complete(result);
  };

  let finished = false;
  const once = (f) =>
    function () {
      if (finished) return;
      finished = true;
      f.apply(null, arguments);
    };

  const context = {
    get callbackWaitsForEmptyEventLoop() {
      return waitForEmptyEventLoop;
    },
    set callbackWaitsForEmptyEventLoop(v) {
      waitForEmptyEventLoop = v;
    },
    succeed: once((result) => done(null, result)),
    fail: once((err) => (err === undefined || err === null ? done('handled') : done(err, null))),
    done: once(done),
  };
  const markReported = () => {
    reported = true;
  };
  return [once(callback), context, markReported, postError];
}

function crash(err) {
  process.stderr.write(`nubo runtime: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
}

function isPromise(v) {
  return v && typeof v.then === 'function';
}

// responseStream opens the streamed /response of invocation id: a
// Writable whose writes go out as written, each as one chunk. The request
// takes the connection with the first write (or the end), so that
// setContentType may come before its head, and a kept connection the
// server closed while the handler ran is not used. done settles once the
// Runtime API has answered the post.
function responseStream(id) {
  // Required where used, though node:net has loaded the stream internals
  // already: deferring it saves nothing.
  const { Writable } = require('node:stream');
  const target = `${API_PREFIX}/invocation/${encodeURIComponent(id)}/response`;
  let contentType = 'application/octet-stream';
  let headSent = false;
  let trailers = '';
  let ex = null;
  const held = []; // writes made while another request has the connection

  let settle;
  const done = new Promise((resolve, reject) => {
    settle = (err) => (err ? reject(err) : resolve());
  });
  const start = () => {
    ex = exchange((err, answer) => {
      releaseApi();
      if (!err && answer.status !== 202) {
        process.stderr.write(`Runtime API streamed response answered ${answer.status}\n`);
      }
      settle(err);
    });
    for (const [parts, cb, last] of held.splice(0)) ex.write(parts, cb, last);
  };

  const send = (parts, cb, last) => {
    if (!headSent) {
      headSent = true;
      parts.unshift(
        requestHead('POST', target, {
          'Content-Type': contentType,
          'Lambda-Runtime-Function-Response-Mode': 'streaming',
          'Transfer-Encoding': 'chunked',
          Trailer: `${ERROR_TYPE_HEADER}, ${ERROR_BODY_TRAILER}`,
        }),
      );
      held.push([parts, cb, last]);
      acquireApi(start);
    } else if (ex) {
      ex.write(parts, cb, last);
    } else {
      held.push([parts, cb, last]);
    }
  };
  const stream = new Writable({
    write(chunk, _encoding, cb) {
      // A chunk of size zero would end the body.
      if (chunk.length === 0) cb();
      else send([chunk.length.toString(16) + '\r\n', chunk, '\r\n'], cb, false);
    },
    final(cb) {
      send([`0\r\n${trailers}\r\n`], cb, true);
    },
  });
  stream.setContentType = (type) => {
    if (headSent) return;
    if (typeof type !== 'string' || !HEADER_VALUE.test(type)) {
      throw new TypeError(`Invalid Content-Type ${JSON.stringify(type)}`);
    }
    contentType = type;
  };
  // fail ends the stream with the error trailers.
  stream.fail = (err) => {
    if (stream.writableEnded) return; // too late for trailers: the answer is complete
    const payload = errorPayload(err);
    // The type is the error's name, which can hold anything: what a
    // header value cannot hold is left out.
    const type = String(payload.errorType).replace(/[^\t\x20-\x7e\x80-\xff]/g, '');
    const body = Buffer.from(JSON.stringify(payload)).toString('base64');
    trailers = `${ERROR_TYPE_HEADER}: ${type}\r\n${ERROR_BODY_TRAILER}: ${body}\r\n`;
    stream.end();
  };
  return [stream, done];
}

// invokeStreaming runs a streamifyResponse handler: it settles when its
// promise does, ending the stream if the handler left it open. Until the
// handler writes, nothing of the invocation keeps the event loop alive
// (the stream takes the connection at its first write, and 'beforeExit'
// does nothing for a streaming invocation), so a referenced timer holds
// the process up meanwhile: a handler whose promise never settles runs
// until the invocation times out, as on Lambda, rather than exit.
async function invokeStreaming(handler, id, event, context) {
  const hold = setInterval(() => {}, 0x7fffffff);
  try {
    const [stream, done] = responseStream(id);
    try {
      await handler(event, stream, context);
      if (!stream.writableEnded) stream.end();
    } catch (err) {
      logError('Invoke Error', err);
      stream.fail(err);
    }
    await done;
  } finally {
    clearInterval(hold);
  }
}

async function invokeOnce(handler, isAsync, scheduleNext) {
  const res = await nextInvocation();
  const headers = res.headers;
  const id = headers['lambda-runtime-aws-request-id'] || '';
  currentRequestId = id;
  currentTenantId = headers['lambda-runtime-aws-tenant-id'];
  if (headers['lambda-runtime-trace-id']) {
    process.env._X_AMZN_TRACE_ID = headers['lambda-runtime-trace-id'];
  } else {
    delete process.env._X_AMZN_TRACE_ID;
  }

  const [callback, ctx, markReported, postError] = callbackContext(id, scheduleNext);

  fatal = (err, code) => {
    postInvocationError(id, err).finally(() => process.exit(code));
  };
  beforeExit = () => {
    beforeExit = () => {};
    markReported();
    if (isAsync) {
      postError(
        new NodeJsExit(
          'The Lambda runtime client detected an unexpected Node.js exit code. This is most commonly caused by a Promise that was never settled. For more information, see https://nodejs.org/docs/latest/api/process.html#exit-codes',
        ),
      );
    } else {
      post(`/invocation/${encodeURIComponent(id)}/response`, 'null').then(scheduleNext, crash);
    }
  };

  try {
    const context = contextFrom(headers, ctx);
    const event = JSON.parse(res.body.toString('utf8'));
    if (handler[STREAMING] === 'response') {
      markReported();
      beforeExit = () => {};
      invokeStreaming(handler, id, event, context).then(scheduleNext, crash);
      return;
    }
    const result = handler(event, context, callback);
    if (isPromise(result)) {
      result.then(ctx.succeed, ctx.fail);
    }
  } catch (err) {
    callback(err);
  }
}

async function main() {
  if (!process.env.AWS_LAMBDA_RUNTIME_API) {
    process.stderr.write('AWS_LAMBDA_RUNTIME_API is not set\n');
    process.exit(1);
  }
  const taskRoot = process.env.LAMBDA_TASK_ROOT || '/var/task';
  patchConsole();
  setDefaultNodePath(taskRoot);

  process.on('uncaughtException', (err) => {
    logError('Uncaught Exception', err);
    fatal(err, 129);
  });
  process.on('unhandledRejection', (reason, promise) => {
    const err = new UnhandledPromiseRejection(reason, promise);
    logError('Unhandled Promise Rejection', err);
    fatal(err, 128);
  });
  process.on('beforeExit', () => beforeExit());

  let handler;
  try {
    handler = await loadHandler(taskRoot, process.env._HANDLER || '');
  } catch (err) {
    logError('Uncaught Exception', err);
    fatal(err, 129);
    return;
  }
  const isAsync = handler.constructor && handler.constructor.name === 'AsyncFunction';

  const scheduleNext = () => {
    setImmediate(() => invokeOnce(handler, isAsync, scheduleNext).catch(crash));
  };
  scheduleNext();
}

main().catch(crash);
