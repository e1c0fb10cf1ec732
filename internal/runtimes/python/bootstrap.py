"""nubo's runtime interface client for Python Lambda functions.

Started by the execution environment as `python3 -u bootstrap.py`. It imports
the handler named by _HANDLER from LAMBDA_TASK_ROOT, then serves invocations
from the Runtime API at AWS_LAMBDA_RUNTIME_API one at a time, forever: the
host stops the process. It follows the conventions of AWS's managed Python
runtimes (handler resolution, the context object, error documents and log
lines) so that unmodified functions behave as they do on Lambda.

Standard library only; runs on Python 3.8 and later.
"""

import _socket
import importlib
import json
import os
import sys
import time

API_PREFIX = "/2018-06-01/runtime"
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"

# AWS joins the lines of an error report with CR so that a log collector
# splitting on LF keeps the whole report in one event, and indents with
# NO-BREAK SPACE so that the indentation survives collectors that trim.
LOG_LINE_JOIN = "\r"
LOG_INDENT = "\u00a0"

# The file the code below was compiled from: __file__ would name the .pyc
# when nubo runs the RIC compiled ahead (see runtimes.Precompile).
THIS_FILE = os.path.abspath(sys._getframe().f_code.co_filename)

_request_id = None
_tenant_id = None


class Fault(Exception):
    """A failure the runtime reports with one of Lambda's Runtime.* types."""

    def __init__(self, error_type, message, trace=None):
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.trace = trace


# --- Runtime API ---------------------------------------------------------


class Invocation(object):
    def __init__(self, headers, body):
        self.body = body
        self.request_id = headers.get("Lambda-Runtime-Aws-Request-Id") or ""
        self.deadline_ms = headers.get("Lambda-Runtime-Deadline-Ms")
        self.function_arn = headers.get("Lambda-Runtime-Invoked-Function-Arn")
        self.trace_id = headers.get("Lambda-Runtime-Trace-Id")
        self.client_context = headers.get("Lambda-Runtime-Client-Context")
        self.cognito_identity = headers.get("Lambda-Runtime-Cognito-Identity")
        self.tenant_id = headers.get("Lambda-Runtime-Aws-Tenant-Id")
        self.content_type = headers.get("Content-Type")


class RuntimeAPI(object):
    """A client of the Runtime API, on one kept-alive connection.

    The runtime goes from its answer straight to the next /next, so the
    connection is never idle for long: while the environment is frozen,
    the /next it waits on is in flight. If the server has closed the
    connection anyway, a request that gets nothing back at all is sent
    once more on a new one.

    HTTP/1.1 is spoken here directly over a socket rather than through
    http.client: importing that module (with the email parser and ssl it
    pulls in) takes about 20 ms, half of the whole runtime start.
    """

    def __init__(self, address):
        self.address = address
        host, _, port = address.rpartition(":")
        self.host = host.strip("[]") or "127.0.0.1"
        self.port = int(port)
        self._sock = None
        self._reader = None

    def _close(self):
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = self._reader = None

    def _call(self, method, path, body=None, headers=None):
        lines = ["{} {}{} HTTP/1.1".format(method, API_PREFIX, path), "Host: " + self.address]
        for name, value in (headers or {}).items():
            lines.append("{}: {}".format(name, value))
        if body is not None:
            lines.append("Content-Length: {}".format(len(body)))
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if body:
            request += body
        while True:
            fresh = self._sock is None
            if fresh:
                self._sock = _connect(self.host, self.port)
                self._reader = _Reader(self._sock)
            reader = self._reader
            reader.received = 0
            try:
                self._sock.sendall(request)
                status, headers, data, keep = _read_response(reader)
            except (_NoResponse, OSError) as e:
                self._close()
                if fresh or reader.received:
                    if isinstance(e, _NoResponse):
                        raise RuntimeError("Runtime API: connection closed without a response")
                    raise
                continue
            except BaseException:
                self._close()
                raise
            if not keep:
                self._close()
            return status, headers, data

    def next(self):
        status, headers, body = self._call("GET", "/invocation/next")
        if status != 200:
            raise RuntimeError(
                "Runtime API /next answered {}: {!r}".format(status, body[:200])
            )
        return Invocation(headers, body)

    def _post(self, path, body, content_type, error_type=None):
        headers = {"Content-Type": content_type}
        if error_type and _header_safe(error_type):
            headers[ERROR_TYPE_HEADER] = error_type
        status, _, data = self._call("POST", path, body, headers)
        if status != 202:
            _stderr("Runtime API {} answered {}: {!r}\n".format(path, status, data[:200]))

    def post_response(self, request_id, body, content_type):
        self._post("/invocation/{}/response".format(request_id), body, content_type)

    # Like AWS's runtime, only an init error carries the error type header.
    def post_error(self, request_id, error):
        self._post(
            "/invocation/{}/error".format(request_id),
            to_json(error).encode("utf-8"),
            "application/json",
        )

    def post_init_error(self, error):
        self._post(
            "/init/error",
            to_json(error).encode("utf-8"),
            "application/json",
            error.get("errorType"),
        )


# The C socket module, not socket.py: its wrapper class and what it imports
# (selectors, enum) cost 2.5 ms at every cold start, for a connect, a send
# and a file-like reader the few lines below give.
def _connect(host, port):
    err = None
    for family, kind, proto, _, addr in _socket.getaddrinfo(host, port, 0, _socket.SOCK_STREAM):
        sock = _socket.socket(family, kind, proto)
        try:
            sock.connect(addr)
            return sock
        except OSError as e:
            sock.close()
            err = e
    raise err or OSError("Runtime API: no address for {}".format(host))


class _Reader(object):
    """The readline and read of a buffered binary file, over a socket."""

    def __init__(self, sock):
        self._sock = sock
        self._buf = bytearray()
        self._eof = False
        self.received = 0  # bytes read from the socket (reset per request)

    def _fill(self):
        if self._eof:
            return False
        data = self._sock.recv(65536)
        if not data:
            self._eof = True
            return False
        self.received += len(data)
        self._buf += data
        return True

    def _take(self, n):
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def readline(self, limit):
        start = 0
        while True:
            i = self._buf.find(b"\n", start, limit)
            if i >= 0:
                return self._take(i + 1)
            start = len(self._buf)
            if start >= limit or not self._fill():
                return self._take(limit)

    def read(self, n=-1):
        if n < 0:
            while self._fill():
                pass
            return self._take(len(self._buf))
        while len(self._buf) < n and self._fill():
            pass
        return self._take(n)


class Headers(object):
    """Response headers, looked up without regard to case."""

    def __init__(self):
        self._fields = {}

    def add(self, name, value):
        # The first of repeated fields counts, as with http.client's get.
        self._fields.setdefault(name.strip().lower(), value.strip())

    def get(self, name, default=None):
        return self._fields.get(name.lower(), default)


_MAX_LINE = 65536


def _read_line(f):
    line = f.readline(_MAX_LINE + 1)
    if len(line) > _MAX_LINE:
        raise RuntimeError("Runtime API: header line too long")
    return line


class _NoResponse(Exception):
    """The connection ended before the first byte of a response."""


def _read_response(f):
    """Reads one HTTP/1.1 response: (status, Headers, body bytes, whether
    the connection may carry the next request)."""
    first = True
    for _ in range(10):
        line = _read_line(f)
        if first and not line:
            raise _NoResponse()
        first = False
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise RuntimeError("Runtime API: malformed status line")
        status, version = int(parts[1]), parts[0]
        headers = Headers()
        count = 0
        while True:
            line = _read_line(f)
            if not line:
                raise RuntimeError("Runtime API: connection closed in the headers")
            if line in (b"\r\n", b"\n"):
                break
            count += 1
            if count > 100:
                raise RuntimeError("Runtime API: too many header fields")
            name, sep, value = line.decode("latin-1").partition(":")
            if sep:
                headers.add(name, value)
        if not 100 <= status < 200 or status == 101:
            break  # an interim (1xx) response is followed by the real one
    else:
        raise RuntimeError("Runtime API: too many interim responses")
    conn = headers.get("Connection", "").lower()
    keep = "close" not in conn and (version != b"HTTP/1.0" or "keep-alive" in conn)
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        body = bytearray()
        while True:
            line = _read_line(f).split(b";")[0].strip()
            if not line or line.strip(b"0123456789abcdefABCDEF"):
                raise RuntimeError("Runtime API: malformed chunk size")
            size = int(line, 16)
            if size == 0:
                while _read_line(f) not in (b"\r\n", b"\n", b""):
                    pass  # trailer fields
                break
            chunk = f.read(size)
            if len(chunk) != size or _read_line(f) not in (b"\r\n", b"\n"):
                raise RuntimeError("Runtime API: connection closed in the body")
            body += chunk
        return status, headers, bytes(body), keep
    length = headers.get("Content-Length")
    if length is None:
        return status, headers, f.read(), False  # delimited by the close
    body = f.read(int(length))
    if len(body) != int(length):
        raise RuntimeError("Runtime API: connection closed in the body")
    return status, headers, body, keep


def _header_safe(value):
    return all(0x21 <= ord(c) <= 0x7E for c in value)


def _stderr(msg):
    try:
        sys.stderr.write(msg)
    except Exception:
        pass


# --- JSON ----------------------------------------------------------------


class _Encoder(json.JSONEncoder):
    # AWS serialises Decimal (common in DynamoDB results). The standard
    # library cannot emit a raw number, so integral values become int (exact)
    # and the others float. A Decimal comes from a loaded decimal module:
    # the runtime does not import it (1.4 ms at every cold start).
    def default(self, o):
        dec = sys.modules.get("decimal")
        if dec is not None and isinstance(o, dec.Decimal):
            if o.is_nan():
                return float("nan")
            if o == o.to_integral_value():
                return int(o)
            return float(o)
        return super().default(o)


# Python 3.12 and later runtimes stop escaping non-ASCII characters.
_ENSURE_ASCII = sys.version_info < (3, 12)


def to_json(obj):
    return _Encoder(ensure_ascii=_ENSURE_ASCII).encode(obj)


def unmarshal_event(body, content_type):
    media = (content_type or "").split(";")[0].strip().lower()
    if media not in ("", "application/json"):
        return body
    try:
        return json.loads(body)
    except Exception as e:
        raise Fault("Runtime.UnmarshalError", "Unable to unmarshal input: {}".format(e))


def marshal_result(result):
    if isinstance(result, (bytes, bytearray)):
        return bytes(result), "application/unknown"
    try:
        return to_json(result).encode("utf-8"), "application/json"
    except Exception as e:
        raise Fault("Runtime.MarshalError", "Unable to marshal response: {}".format(e))


# --- context -------------------------------------------------------------


def _fill(obj, source):
    for name in obj.__slots__:
        setattr(obj, name, source.get(name) if isinstance(source, dict) else None)
    return obj


class CognitoIdentity(object):
    __slots__ = ["cognito_identity_id", "cognito_identity_pool_id"]

    def __repr__(self):
        return "CognitoIdentity([cognito_identity_id={},cognito_identity_pool_id={}])".format(
            self.cognito_identity_id, self.cognito_identity_pool_id
        )


class Client(object):
    __slots__ = [
        "installation_id",
        "app_title",
        "app_version_name",
        "app_version_code",
        "app_package_name",
    ]

    def __repr__(self):
        return "Client([{}])".format(
            ",".join("{}={}".format(n, getattr(self, n)) for n in self.__slots__)
        )


class ClientContext(object):
    __slots__ = ["custom", "env", "client"]

    def __repr__(self):
        return "ClientContext([custom={},env={},client={}])".format(
            self.custom, self.env, self.client
        )


def _parse_header_json(value, name):
    try:
        return json.loads(value)
    except Exception as e:
        raise Fault(
            "Runtime.LambdaContextUnmarshalError",
            "Unable to parse {} JSON: {}".format(name, e),
        )


class LambdaContext(object):
    """The second argument of a handler, with AWS's attribute names."""

    def __init__(self, inv):
        self.aws_request_id = inv.request_id
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        # A string, as in AWS's runtime: it is read from the environment as is.
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = inv.function_arn
        self.tenant_id = inv.tenant_id

        self.client_context = None
        if inv.client_context:
            raw = _parse_header_json(inv.client_context, "Client Context")
            cc = _fill(ClientContext(), raw)
            if cc.client is not None:
                cc.client = _fill(Client(), cc.client)
            self.client_context = cc

        self.identity = _fill(CognitoIdentity(), {})
        if inv.cognito_identity:
            raw = _parse_header_json(inv.cognito_identity, "Cognito Identity")
            if isinstance(raw, dict):
                self.identity.cognito_identity_id = raw.get("cognitoIdentityId")
                self.identity.cognito_identity_pool_id = raw.get("cognitoIdentityPoolId")

        try:
            self._deadline_ms = int(inv.deadline_ms)
        except (TypeError, ValueError):
            self._deadline_ms = 0

    def get_remaining_time_in_millis(self):
        left = self._deadline_ms - int(time.time() * 1000)
        return left if left > 0 else 0

    def log(self, msg):
        sys.stdout.write(str(msg))

    def __repr__(self):
        return (
            "LambdaContext([aws_request_id={},log_group_name={},log_stream_name={},"
            "function_name={},memory_limit_in_mb={},function_version={},"
            "invoked_function_arn={},client_context={},identity={},tenant_id={}])"
        ).format(
            self.aws_request_id,
            self.log_group_name,
            self.log_stream_name,
            self.function_name,
            self.memory_limit_in_mb,
            self.function_version,
            self.invoked_function_arn,
            self.client_context,
            self.identity,
            self.tenant_id,
        )


# --- errors and logs -----------------------------------------------------


def error_document(message, error_type, stack_trace, request_id=None):
    return {
        "errorMessage": message or "",
        "errorType": error_type or "",
        "requestId": request_id if request_id is not None else "",
        "stackTrace": stack_trace or [],
    }


def _user_frames(tb):
    """Formats the frames of tb, leaving out the runtime's own leading frames."""
    try:
        import traceback  # only on errors: it is a fifth of logging's import

        frames = [
            (f.filename, f.lineno, f.name, f.line) for f in traceback.extract_tb(tb)
        ]
    except Exception:
        # A module traceback imports (at once, or when it first reads a
        # source line) can be hidden by a directory the function put on
        # sys.path; the report goes out anyway, without source lines.
        frames = []
        while tb is not None:
            code = tb.tb_frame.f_code
            frames.append((code.co_filename, tb.tb_lineno, code.co_name, None))
            tb = tb.tb_next
    for i, frame in enumerate(frames):
        if os.path.abspath(frame[0]) != THIS_FILE:
            frames = frames[i:]
            break
    # Plain tuples rather than FrameSummary objects: Python 3.11+ would add
    # caret lines that AWS's runtime does not show.
    out = []
    for filename, lineno, name, line in frames:
        entry = '  File "{}", line {}, in {}\n'.format(filename, lineno, name)
        if line:
            entry += "    {}\n".format(line.strip())
        out.append(entry)
    return out


def error_from_exception(exc, request_id=None):
    return error_document(
        str(exc), type(exc).__name__, _user_frames(exc.__traceback__), request_id
    )


def _json_logs():
    return (os.environ.get("AWS_LAMBDA_LOG_FORMAT") or "").upper() == "JSON"


def _utc_timestamp(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % (
        int(t * 1000) % 1000
    )


def log_error(error):
    """Writes AWS's one-event report of a failed init or invocation."""
    if _json_logs():
        doc = {"timestamp": _utc_timestamp(time.time()), "level": "ERROR"}
        doc.update(error)
        sys.stdout.write(to_json(doc) + "\n")
        return
    head = "[ERROR]"
    if error.get("errorType"):
        head += " " + error["errorType"]
    if error.get("errorMessage"):
        if error.get("errorType"):
            head += ":"
        head += " " + error["errorMessage"]
    lines = [head, "Traceback (most recent call last):"]
    for entry in error.get("stackTrace") or []:
        if entry == "":
            lines.append("")
            continue
        for line in entry.splitlines():
            stripped = line.lstrip(" ")
            lines.append(LOG_INDENT * (len(line) - len(stripped)) + stripped)
    sys.stdout.write(LOG_LINE_JOIN.join(lines) + "\n")


def setup_logging(logging):
    """Puts Lambda's log handler on the root logger of the logging module."""

    class LambdaLogHandler(logging.Handler):
        def emit(self, record):
            try:
                sys.stdout.write(self.format(record))
            except Exception:
                self.handleError(record)

    class RequestIdFilter(logging.Filter):
        def filter(self, record):
            record.aws_request_id = _request_id or ""
            record.tenant_id = _tenant_id
            return True

    class TextFormatter(logging.Formatter):
        converter = time.gmtime

        def __init__(self):
            super().__init__(
                "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n",
                "%Y-%m-%dT%H:%M:%S",
            )

    class JsonFormatter(logging.Formatter):
        def format(self, record):
            doc = {
                "timestamp": _utc_timestamp(record.created),
                "level": logging.getLevelName(min(50, max(0, record.levelno)) // 10 * 10),
                "message": record.getMessage(),
                "logger": record.name,
                "requestId": getattr(record, "aws_request_id", None) or None,
            }
            if record.exc_info:
                import traceback

                doc["errorType"] = record.exc_info[0].__name__
                doc["errorMessage"] = str(record.exc_info[1])
                doc["stackTrace"] = traceback.format_tb(record.exc_info[2])
                doc["location"] = "{}:{}:{}".format(
                    record.pathname, record.funcName, record.lineno
                )
            if getattr(record, "tenant_id", None) is not None:
                doc["tenantId"] = record.tenant_id
            doc = {k: v for k, v in doc.items() if v is not None}
            try:
                return json.dumps(doc, ensure_ascii=False, default=str) + "\n"
            except Exception:
                return json.dumps({"level": doc["level"], "message": str(doc["message"])}) + "\n"

    handler = LambdaLogHandler()
    handler.setFormatter(JsonFormatter() if _json_logs() else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = (os.environ.get("AWS_LAMBDA_LOG_LEVEL") or "").upper()
    if level == "TRACE":
        level = "DEBUG"
    if level and isinstance(logging.getLevelName(level), int):
        root.setLevel(level)


class _SetUpLoggingOnImport(object):
    """Sets Lambda's log handler up when the logging module is first imported.

    Importing logging (and the string, traceback, linecache and tokenize it
    brings) is 6 ms of a 26 ms runtime start here, wasted on a function
    that never logs through it (docs/performance.md, session 9). Any import
    of it, the function's or a library's, finds this finder first on
    sys.meta_path: it lets the other finders find the module and sets the
    handler up as soon as the module has run, before the importer sees it,
    then leaves sys.meta_path. Nothing of this stays visible on the module.
    """

    def find_spec(self, name, path=None, target=None):
        if name != "logging":
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None) if finder is not self else None
            spec = find(name, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _ThenSetUpLogging(spec.loader, self)
        return spec


class _ThenSetUpLogging(object):
    """A module loader that runs setup_logging on the module it has run."""

    def __init__(self, loader, finder):
        self._loader = loader
        self._finder = finder

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = self._loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        setup_logging(module)
        # A new list, not the one another thread's import may be walking.
        sys.meta_path = [f for f in sys.meta_path if f is not self._finder]


# What importing logging and traceback loads that the runtime has not
# loaded by then (Python 3.8 to 3.13, measured with -I -S). Lambda's
# runtime imports them before the function's directories go first on
# sys.path, so a function module of one of these names never replaces the
# standard library's; imported later, it would.
_LOGGING_IMPORTS = frozenset(
    (
        "_colorize", "_weakrefset", "atexit", "contextlib", "linecache", "logging", "string",
        "textwrap", "threading", "token", "tokenize", "traceback", "warnings", "weakref",
    )
)


def _shadows_logging(dirs):
    """Whether dirs hold a module named like one importing logging loads."""
    for d in dirs:
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for n in names:
            if n.partition(".")[0] in _LOGGING_IMPORTS:
                return True
    return False


def setup_logging_when_imported(front):
    """Sets Lambda's log handler up now or when logging is first imported.

    front are the directories setup_sys_path is about to put first. Now
    when logging is already imported (by a sitecustomize, say), when one
    of them holds a module named like logging or one it imports (imported
    now, the standard library's win, as on Lambda), or when the standard
    library's logging is not a plain package on disk (in a zip, say).
    """
    logging = sys.modules.get("logging")
    if logging is None:
        stdlib = os.path.dirname(getattr(os, "__file__", None) or "")
        if (
            _shadows_logging(front)
            or not stdlib
            or not os.path.isfile(os.path.join(stdlib, "logging", "__init__.py"))
        ):
            import logging
            import tokenize  # noqa: F401 (linecache imports it when first used)
            import traceback  # noqa: F401
    if logging is not None:
        setup_logging(logging)
    else:
        sys.meta_path.insert(0, _SetUpLoggingOnImport())


class _Unbuffered(object):
    """Flushes after every write, for interpreters started without -u."""

    def __init__(self, stream):
        self._stream = stream

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def write(self, data):
        n = self._stream.write(data)
        self._stream.flush()
        return n

    def writelines(self, lines):
        self._stream.writelines(lines)
        self._stream.flush()


# --- handler -------------------------------------------------------------


def front_paths(task_root):
    """The function's code and its layers' directories, as Lambda orders them."""
    version = "python{}.{}".format(sys.version_info[0], sys.version_info[1])
    return [task_root, "/opt/python/lib/{}/site-packages".format(version), "/opt/python"]


def setup_sys_path(front):
    """Puts front (see front_paths) first on sys.path, as Lambda does."""
    # The directory Python put first on sys.path: the script's (the .pyc's
    # when compiled ahead, whose code names the source's path instead).
    here = os.path.dirname(os.path.abspath(sys.argv[0]))
    # The runtime's own directory goes last so that a function module named
    # like a file of the runtime is the one imported.
    rest = [p for p in sys.path if p not in front and p not in ("", here)]
    sys.path[:] = front + rest + [here]


def load_handler(spec):
    try:
        module_name, function_name = spec.rsplit(".", 1)
    except ValueError as e:
        raise Fault("Runtime.MalformedHandlerName", "Bad handler '{}': {}".format(spec, e))
    try:
        if module_name.split(".")[0] in sys.builtin_module_names:
            raise Fault(
                "Runtime.BuiltInModuleConflict",
                "Cannot use built-in module {} as a handler module".format(module_name),
            )
        module = importlib.import_module(module_name.replace("/", "."))
    except ImportError as e:
        raise Fault(
            "Runtime.ImportModuleError",
            "Unable to import module '{}': {}".format(module_name, e),
        )
    except SyntaxError as e:
        raise Fault(
            "Runtime.UserCodeSyntaxError",
            "Syntax error in module '{}': {}".format(module_name, e),
            ['  File "%s" Line %s\n    %s' % (e.filename, e.lineno, e.text)],
        )
    try:
        return getattr(module, function_name)
    except AttributeError:
        raise Fault(
            "Runtime.HandlerNotFound",
            "Handler '{}' missing on module '{}'".format(function_name, module_name),
        )


def set_trace_id(trace_id):
    if trace_id:
        os.environ["_X_AMZN_TRACE_ID"] = trace_id
    else:
        os.environ.pop("_X_AMZN_TRACE_ID", None)


def handle(api, handler, inv):
    error = None
    try:
        context = LambdaContext(inv)
        event = unmarshal_event(inv.body, inv.content_type)
        result = handler(event, context)
        payload, content_type = marshal_result(result)
    except Fault as f:
        error = error_document(f.message, f.error_type, f.trace, inv.request_id)
    except Exception as e:
        error = error_from_exception(e, inv.request_id)
    if error is not None:
        log_error(error)
        api.post_error(inv.request_id, error)
    else:
        api.post_response(inv.request_id, payload, content_type)


def main():
    global _request_id, _tenant_id

    # python3 -u makes the text streams write through; wrap them otherwise.
    if not getattr(sys.stdout, "write_through", False):
        sys.stdout = _Unbuffered(sys.stdout)
        sys.stderr = _Unbuffered(sys.stderr)

    address = os.environ.get("AWS_LAMBDA_RUNTIME_API")
    if not address:
        _stderr("AWS_LAMBDA_RUNTIME_API is not set\n")
        sys.exit(1)
    api = RuntimeAPI(address)

    front = front_paths(os.environ.get("LAMBDA_TASK_ROOT") or "/var/task")
    setup_logging_when_imported(front)
    setup_sys_path(front)

    try:
        handler = load_handler(os.environ.get("_HANDLER") or "")
    except Fault as f:
        error = error_document(f.message, f.error_type, f.trace)
    except Exception as e:
        error = error_from_exception(e)
    else:
        error = None
    if error is not None:
        log_error(error)
        try:
            api.post_init_error(error)
        finally:
            sys.exit(1)

    while True:
        inv = api.next()
        _request_id = inv.request_id
        _tenant_id = inv.tenant_id
        set_trace_id(inv.trace_id)
        handle(api, handler, inv)


if __name__ == "__main__":
    main()
