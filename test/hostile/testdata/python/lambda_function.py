# The Python hostile function: the same questions as the Go probe's
# "status" and "writes", asked through CPython, so the isolation does not
# depend on the runtime that runs inside it.
import errno
import os
import socket


def _status_field(pid, key):
    try:
        with open("/proc/%s/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return " ".join(line.split()[1:])
    except OSError:
        pass
    return ""


def _procs():
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % name, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open("/proc/%s/stat" % name) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        out.append({"pid": int(name), "ppid": ppid, "cmdline": cmd})
    return out


def _err(e):
    return errno.errorcode.get(e.errno, str(e.errno))


def _writes():
    out = {}
    for d in ["/", "/var/task", "/opt", "/etc", "/usr", "/var/runtime", "/tmp"]:
        p = os.path.join(d, ".pyprobe-%d" % os.getpid())
        try:
            fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            os.close(fd)
            os.unlink(p)
            out[d] = ""
        except OSError as e:
            out[d] = _err(e)
    return out


def _denied():
    out = {}
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        s.close()
        out["socket_raw"] = ""
    except OSError as e:
        out["socket_raw"] = _err(e)
    try:
        os.chroot("/")
        out["chroot"] = ""
    except OSError as e:
        out["chroot"] = _err(e)
    try:
        os.mknod("/tmp/pymem", 0o20600, os.makedev(1, 1))
        os.unlink("/tmp/pymem")
        out["mknod_char"] = ""
    except OSError as e:
        out["mknod_char"] = _err(e)
    try:
        with open("/etc/shadow") as f:
            f.read()
        out["shadow"] = ""
    except OSError as e:
        out["shadow"] = _err(e)
    return out


def handler(event, context):
    return {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "procs": _procs(),
        "writes": _writes(),
        "denied": _denied(),
        "CapEff": _status_field("self", "CapEff"),
        "CapBnd": _status_field("self", "CapBnd"),
        "NoNewPrivs": _status_field("self", "NoNewPrivs"),
        "Seccomp": _status_field("self", "Seccomp"),
    }
