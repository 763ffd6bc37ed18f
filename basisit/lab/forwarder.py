"""The lab's package upstream: a forward proxy on the control host for zentral's package proxy only.

    python3 -I forwarder.py --listen 10.160.0.62:3128 --peer 10.160.0.10 --allow deb.debian.org

Guests have no route out of the lab. zentral's package proxy (apt-cacher-ng, role package_proxy)
names this forwarder as its upstream `Proxy:`; it forwards exactly what apt needs and nothing else:

- only from the peers given (zentral's package proxy host): any other source gets 403;
- only HTTP GET and HEAD with an absolute `http://` URL: CONNECT and every other method get 403;
- only to the hosts given (the Debian mirrors the host's apt uses, read like the golden image's,
  basisit.lab.image.host_mirrors), on port 80 or the port those mirrors name: anything else 403.

Standard library only (it runs as its own process, started by `basisit lab up`, stopped by
`lab down`; see basisit.lab.lab `ensure_upstream`). HTTP/1.0 towards the client: one request per
connection, the body streamed as it arrives.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import ipaddress
import socket
import sys
import urllib.parse

HOP_BY_HOP = {
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
}
ALLOWED_METHODS = ("GET", "HEAD")
UPSTREAM_TIMEOUT = 60.0
CHUNK = 64 * 1024


class Policy:
    """Who may ask for what: peers (addresses) and upstream host[:port] names."""

    def __init__(self, peers: list[str], hosts: list[str]):
        self.peers = {ipaddress.ip_address(p) for p in peers}
        self.hosts: set[tuple[str, int]] = set()
        for h in hosts:
            name, _, port = h.lower().partition(":")
            self.hosts.add((name, int(port) if port else 80))

    def refuse_peer(self, address: str) -> str | None:
        try:
            ok = ipaddress.ip_address(address) in self.peers
        except ValueError:
            ok = False
        return None if ok else f"source {address} may not use this proxy"

    def target(self, method: str, url: str) -> tuple[str, int, str] | str:
        """(host, port, path) to forward to, or the reason for a 403."""
        if method not in ALLOWED_METHODS:
            return f"method {method} refused (only GET and HEAD)"
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            return f"only absolute http:// URLs are forwarded, not {url[:200]!r}"
        if u.username or u.password:
            return "credentials in the URL are refused"
        try:
            port = u.port or 80
        except ValueError:
            return f"bad port in {url[:200]!r}"
        host = u.hostname.lower()
        if (host, port) not in self.hosts:
            allowed = ", ".join(sorted(f"{h}:{p}" for h, p in self.hosts))
            return f"{host}:{port} is not a package source of this lab (allowed: {allowed})"
        path = u.path or "/"
        if u.query:
            path += "?" + u.query
        return host, port, path


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "basisit-lab-forwarder"
    protocol_version = "HTTP/1.0"
    policy: Policy  # set on the subclass made by make_server

    def __getattr__(self, name: str):
        # BaseHTTPRequestHandler dispatches `do_<METHOD>`: every method it would call is refused
        # here unless it is one of ALLOWED_METHODS (CONNECT, POST, PUT, ... get 403, not 501).
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    def _refuse(self, why: str) -> None:
        self.log_message("refused %s %s: %s", self.command, self.path[:200], why)
        body = f"403 forbidden by the basisit lab forwarder: {why}\n".encode()
        self.send_response(403)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        why = self.policy.refuse_peer(self.client_address[0])
        if why:
            self._refuse(why)
            return
        t = self.policy.target(self.command, self.path)
        if isinstance(t, str):
            self._refuse(t)
            return
        host, port, path = t
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Host"] = host if port == 80 else f"{host}:{port}"
        headers["Connection"] = "close"
        conn = http.client.HTTPConnection(host, port, timeout=UPSTREAM_TIMEOUT)
        try:
            conn.request(self.command, path, headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            self.log_message("upstream %s:%d failed: %s", host, port, e)
            self.send_error(502, f"upstream {host}:{port} failed: {e}")
            return
        try:
            self.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in HOP_BY_HOP:
                    self.send_header(k, v)
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                while True:
                    chunk = resp.read(CHUNK)
                    if not chunk:
                        break
                    self.wfile.write(chunk)
        except OSError as e:
            self.log_message("forwarding %s failed: %s", self.path[:200], e)
        finally:
            conn.close()

    def log_message(self, format: str, *args) -> None:
        sys.stderr.write(f"{self.log_date_time_string()} {self.client_address[0]} {format % args}\n")
        sys.stderr.flush()


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def make_server(listen: str, port: int, policy: Policy) -> Server:
    handler = type("BoundHandler", (Handler,), {"policy": policy})
    return Server((listen, port), handler)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="the basisit lab's package upstream (GET/HEAD to the mirrors only)")
    ap.add_argument("--listen", required=True, help="address:port to listen on")
    ap.add_argument("--peer", action="append", required=True, help="a source address that may use it")
    ap.add_argument("--allow", action="append", required=True, help="an upstream host[:port] it forwards to")
    a = ap.parse_args(argv)
    addr, _, port = a.listen.rpartition(":")
    try:
        srv = make_server(addr, int(port), Policy(a.peer, a.allow))
    except (OSError, ValueError) as e:
        print(f"forwarder: cannot listen on {a.listen}: {e}", file=sys.stderr)
        return 1
    print(f"forwarder: listening on {a.listen} for {', '.join(a.peer)}; upstream {', '.join(a.allow)}", flush=True)
    socket.setdefaulttimeout(UPSTREAM_TIMEOUT)
    srv.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
