"""Debian's nginx as a load balancer in front of gateway processes, for the scale-out tests:
the repository's `deploy/nginx.conf` with the instances' ports filled in, run under a
temporary prefix in the foreground, stopped by its PID."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from bench.nginx import find_nginx, free_port, wait_listening
from tests.conftest import stop_process

#: The nginx executable, or None when it is not installed.
NGINX = find_nginx()
SAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "nginx.conf"


class Nginx:
    """nginx balancing `ports` with the sample config; `url` is its address."""

    def __init__(self, ports: list[int], prefix: Path):
        server_block = SAMPLE.read_text()
        servers = "".join(f"    server 127.0.0.1:{p} max_fails=0;\n" for p in ports)
        server_block = re.sub(
            r"(    server 127\.0\.0\.1:\d+ max_fails=0;\n)+", servers, server_block
        )
        self.port = free_port()
        server_block = server_block.replace("listen 8080;", f"listen 127.0.0.1:{self.port};")
        (prefix / "logs").mkdir(parents=True, exist_ok=True)
        conf = prefix / "nginx.conf"
        conf.write_text(
            "worker_processes 1;\n"
            f"pid {prefix}/nginx.pid;\n"
            "error_log stderr warn;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            "  access_log off;\n"
            f"  client_body_temp_path {prefix}/body;\n"
            f"  proxy_temp_path {prefix}/proxy;\n"
            f"  fastcgi_temp_path {prefix}/fastcgi;\n"
            f"  uwsgi_temp_path {prefix}/uwsgi;\n"
            f"  scgi_temp_path {prefix}/scgi;\n"
            f"{server_block}\n"
            "}\n"
        )
        self.log = prefix / "logs" / "stderr.log"
        assert NGINX is not None, "nginx is not installed"
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [NGINX, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self.url = f"http://127.0.0.1:{self.port}"
        if not wait_listening(self.port, self.proc):
            self.stop()
            raise RuntimeError(f"nginx did not start: {self.log.read_text()}")

    def stop(self) -> None:
        """Stop nginx (its master by PID; the workers follow)."""
        stop_process(self.proc)
