"""nginx as a plain reverse proxy in front of the bench's fake upstream: the baseline for the
gateway's own cost (issue 15's targets are ratios to it).

Debian's nginx runs as one process (`master_process off`: the worker's work in the process the
bench measures) from a prefix and configuration written under a temporary directory, so no
root, no system paths and no other nginx is touched. It proxies everything to the upstream over
HTTP/1.1 with a keep-alive pool and without buffering the response (`proxy_buffering off`), as
a streaming proxy must; the request path picks the upstream's response shape, as for `direct`.

    python bench/nginx.py --upstream-port PORT    # prints "listening on PORT", runs until killed

Prints "nginx not found" and exits 3 when nginx is not installed.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

#: Where Debian installs it (not always on a user's PATH).
CANDIDATES = ("nginx", "/usr/sbin/nginx")

CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log stderr warn;

events {{
    worker_connections 8192;
}}

http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;

    upstream bench {{
        server 127.0.0.1:{upstream};
        keepalive 512;
        keepalive_requests 1000000;
    }}

    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
        }}
    }}
}}
"""


def find_nginx() -> str | None:
    """The nginx executable, or None."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def free_port() -> int:
    """A port that was free a moment ago (nginx binds by itself)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_listening(port: int, proc: subprocess.Popen[bytes], seconds: float = 10) -> bool:
    """True once something accepts on `port`; False if nginx exited or time ran out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def main() -> None:
    """Write the configuration, start nginx, say where it listens, stop it on SIGTERM."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream-port", type=int, required=True)
    args = parser.parse_args()
    nginx = find_nginx()
    if nginx is None:
        print("nginx not found", file=sys.stderr, flush=True)
        sys.exit(3)
    with tempfile.TemporaryDirectory(prefix="tidegate-bench-nginx-") as prefix:
        port = free_port()
        conf = Path(prefix) / "nginx.conf"
        conf.write_text(CONF.format(prefix=prefix, upstream=args.upstream_port, port=port))
        proc = subprocess.Popen([nginx, "-p", prefix, "-e", "stderr", "-c", str(conf)])

        def stop(signum: int, frame: FrameType | None) -> None:
            proc.terminate()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if not wait_listening(port, proc):
            proc.terminate()
            proc.wait(5)
            print("nginx did not start", file=sys.stderr, flush=True)
            sys.exit(1)
        print(f"listening on {port}", file=sys.stderr, flush=True)
        try:
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


if __name__ == "__main__":
    main()
