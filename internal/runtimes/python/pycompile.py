"""nubo's bytecode compiler for Python functions.

Run by the host as the runtime of a sandbox of its own, once per function
code and interpreter (see package pycache): a Python function's code is
read-only, so a package shipped without .pyc files is compiled again at
every cold start. This compiles every .py file under the code and layer
directories that has no .pyc of this interpreter yet, and answers its one
invocation with a zip of the .pyc files, named as the task root or /opt
would hold them ("task/pkg/__pycache__/mod.cpython-311.pyc"). The host
checks each one and writes it beside its source.

It runs none of the function's code: compiling only parses. Standard
library only; runs on Python 3.8 and later.
"""

import http.client
import importlib.util
import io
import os
import py_compile
import sys
import tempfile
import time
import zipfile

API = "/2018-06-01/runtime/invocation/"

# Larger sources (generated tables, mostly) are left to their imports: one
# could take longer than the whole run may.
MAX_SOURCE = 4 << 20

# The archive's comment when the run stopped before compiling everything
# (pycache.PartialComment): the host runs it again later, and what is
# compiled by then is skipped.
PARTIAL = b"partial"


def sources(root):
    """Yields the .py files under root that have no cached bytecode yet."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            src = os.path.join(dirpath, name)
            if os.path.islink(src) or not os.path.isfile(src) or os.path.getsize(src) > MAX_SOURCE:
                continue
            cached = importlib.util.cache_from_source(src)
            if os.path.exists(cached):
                continue
            yield src, cached


def archive(roots, limit, deadline, scratch):
    """The zip of compiled files: at most limit bytes, compiled until the
    monotonic clock reaches deadline. What does not fit is compiled by the
    imports, as without this, until another run."""
    buf = io.BytesIO()
    # The central directory, written at the end: 46 bytes and the name per
    # file, and the end record with its comment.
    directory = 64 + len(PARTIAL)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for prefix, root in roots:
            if not root or not os.path.isdir(root):
                continue
            for src, cached in sources(root):
                if time.monotonic() > deadline:
                    return finish(z, buf)
                try:
                    py_compile.compile(src, cfile=scratch, doraise=True,
                                       invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
                except Exception:
                    continue  # left to the import, which reports it
                name = prefix + "/" + os.path.relpath(cached, root)
                size = os.path.getsize(scratch)
                try:
                    named = len(name.encode("utf-8"))
                except UnicodeEncodeError:
                    continue  # a name a zip cannot carry
                # Its local header (30 bytes and the name), its data
                # (deflate grows what it cannot compress by a few bytes a
                # block) and its entry in the directory.
                need = 30 + named + size + size // 1000 + 64 + 46 + named
                if 64 + len(PARTIAL) + need > limit:
                    continue  # could never fit: left to its import
                if buf.tell() + need + directory > limit:
                    return finish(z, buf)
                z.write(scratch, name)
                directory += 46 + named
    return buf.getvalue()


def finish(z, buf):
    z.comment = PARTIAL
    z.close()
    return buf.getvalue()


def main():
    conn = http.client.HTTPConnection(os.environ["AWS_LAMBDA_RUNTIME_API"])
    conn.request("GET", API + "next")
    resp = conn.getresponse()
    resp.read()
    request_id = resp.getheader("Lambda-Runtime-Aws-Request-Id")
    roots = [("task", os.environ.get("LAMBDA_TASK_ROOT", "")), ("opt", os.environ.get("NUBO_OPT_DIR", ""))]
    fd, scratch = tempfile.mkstemp(suffix=".pyc")
    os.close(fd)
    limit = int(os.environ.get("NUBO_PYC_LIMIT", "6000000"))
    deadline = time.monotonic() + float(os.environ.get("NUBO_PYC_SECONDS", "60"))
    body = archive(roots, limit, deadline, scratch)
    os.unlink(scratch)
    conn.request("POST", API + request_id + "/response", body=body)
    conn.getresponse().read()
    # Wait for the host to end the sandbox.
    conn.request("GET", API + "next")
    conn.getresponse().read()


if __name__ == "__main__":
    sys.exit(main())
