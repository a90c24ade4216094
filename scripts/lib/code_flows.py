#!/usr/bin/env python3
"""Authorization-code flows against a running gatehouse, one at a time, for scripts/bench (f).

Each flow is what a browser and an app do when a person signs in to the app with gatehouse:
GET /authorize (signed out) -> GET /login -> POST /login -> GET /authorize (signed in: the code)
-> POST /token (the app's exchange, PKCE). The browser is new for every flow (no cookies); the
first flow warms up and is not counted.

    code_flows.py BASE CLIENT_ID REDIRECT_URI USERNAME PASSWORD FLOWS SERVER_PID keep|fresh

`keep`: the browser's requests share one kept-alive connection and the app's another, as browsers
and HTTP client libraries do; `fresh`: a new connection for every request. The server's CPU time
of each step is read from /proc (every thread's schedstat, nanoseconds) around each request, while
the server has nothing else to do. Prints, for scripts/bench to read:
    total_us=T           (server CPU per flow, every thread, from /proc/PID/stat)
    hash_us=H            (of it, the bcrypt pool's threads)
    steps_us=A B C D E   (server CPU per flow, by step, µs)
    median_ms=M          (a flow's wall clock, its five requests)
    elapsed_s=S          (all counted flows)
"""

import base64
import glob
import hashlib
import html
import http.client
import json
import os
import re
import secrets
import statistics
import sys
import time
import urllib.parse


def process_cpu_us(pid, only_hash_threads=False):
    """CPU time the server has used, every thread's (those that ended too), or only its bcrypt pool's
    (threads named hash-floor and hash-spare-N, src/auth/password.rs), in µs; clock-tick grained."""
    tick_us = 1_000_000 / os.sysconf("SC_CLK_TCK")
    paths = glob.glob(f"/proc/{pid}/task/*/stat") if only_hash_threads else [f"/proc/{pid}/stat"]
    total = 0
    for path in paths:
        try:
            with open(path) as stat:
                line = stat.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        name, fields = line[line.index("(") + 1:line.rindex(")")], line[line.rindex(")") + 2:].split()
        if only_hash_threads and not name.startswith("hash-"):
            continue
        total += (int(fields[11]) + int(fields[12])) * tick_us
    return total


def threads_cpu_ns(pid):
    """CPU time of each live thread of the server, in nanoseconds, by thread id."""
    times = {}
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as stat:
                times[path.split("/")[4]] = int(stat.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended meanwhile
    return times


def cpu_between(before, after):
    """What the server's threads used between two readings: a thread that started meanwhile counts
    from zero; one that ended meanwhile (tokio's idle blocking threads exit) is left out, rather than
    taking its whole life's time out of the sum."""
    return sum(ns - before.get(tid, 0) for tid, ns in after.items())


class Connection:
    """One HTTP/1.1 client connection, kept alive or renewed for each request."""

    def __init__(self, host, port, keep):
        self.host, self.port, self.keep = host, port, keep
        self.conn = None

    def request(self, method, target, body=None, headers=None):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        self.conn.request(method, target, body=body, headers=headers or {})
        response = self.conn.getresponse()
        data = response.read()
        if not self.keep:
            # Closed within the request's own measurement, not the next one's.
            self.close()
        return response, data

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def die(message):
    print(f"code_flows: {message}", file=sys.stderr)
    sys.exit(1)


def hidden(page, name):
    match = re.search(rf'name="{name}" value="([^"]*)"', page)
    if not match:
        die(f"no {name} field in the page: {page[:400]}")
    return html.unescape(match.group(1))


def main():
    base, client_id, redirect_uri, username, password, flows, pid, mode = sys.argv[1:9]
    flows, pid = int(flows), int(pid)
    url = urllib.parse.urlsplit(base)
    steps_ns = [0] * 5
    walls = []
    app = Connection(url.hostname, url.port, mode == "keep")
    started = None
    for flow in range(flows + 1):
        if flow == 1:
            steps_ns = [0] * 5
            started = time.monotonic()
            total_before, hash_before = process_cpu_us(pid), process_cpu_us(pid, only_hash_threads=True)
        browser = Connection(url.hostname, url.port, mode == "keep")
        cookies = {}
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        query = urllib.parse.urlencode({
            "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
            "scope": "openid profile", "state": "s", "nonce": "n",
            "code_challenge": challenge, "code_challenge_method": "S256",
        })
        wall = 0.0

        def step(index, expected, connection, method, target, form=None, browser_request=True):
            nonlocal wall
            headers = {}
            body = None
            if browser_request and cookies:
                headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in cookies.items())
            if form is not None:
                body = urllib.parse.urlencode(form)
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            before, clock = threads_cpu_ns(pid), time.monotonic()
            response, data = connection.request(method, target, body, headers)
            wall += time.monotonic() - clock
            steps_ns[index] += cpu_between(before, threads_cpu_ns(pid))
            if response.status != expected:
                die(f"{method} {target} answered {response.status} (expected {expected}): {data[:400]!r}")
            if browser_request:
                for header in response.headers.get_all("Set-Cookie") or []:
                    name, _, rest = header.partition("=")
                    cookies[name.strip()] = rest.split(";", 1)[0]
            return response, data

        response, _ = step(0, 303, browser, "GET", f"/authorize?{query}")
        login = response.headers["Location"]
        if not login.startswith("/login?"):
            die(f"/authorize sent a signed-out browser to {login}")
        _, page = step(1, 200, browser, "GET", login)
        page = page.decode()
        form = {"csrf_token": hidden(page, "csrf_token"), "username": username, "password": password,
                "next": hidden(page, "next")}
        response, _ = step(2, 303, browser, "POST", "/login", form)
        back = response.headers["Location"]
        if back != form["next"]:
            die(f"POST /login sent the browser to {back}, not {form['next']}")
        response, _ = step(3, 302, browser, "GET", back)
        answer = urllib.parse.urlsplit(response.headers["Location"])
        code = urllib.parse.parse_qs(answer.query).get("code", [None])[0]
        if code is None:
            die(f"/authorize redirected a signed-in browser to {response.headers['Location']}")
        exchange = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                    "code_verifier": verifier, "client_id": client_id}
        _, tokens = step(4, 200, app, "POST", "/token", exchange, browser_request=False)
        if "id_token" not in json.loads(tokens):
            die(f"the code exchange gave no ID token: {tokens[:400]!r}")
        browser.close()
        if flow > 0:
            walls.append(wall)
    elapsed = time.monotonic() - started
    total_us = (process_cpu_us(pid) - total_before) / flows
    hash_us = (process_cpu_us(pid, only_hash_threads=True) - hash_before) / flows
    app.close()
    print(f"total_us={total_us:.0f}")
    print(f"hash_us={hash_us:.0f}")
    print("steps_us=" + " ".join(str(round(ns / 1000 / flows)) for ns in steps_ns))
    print(f"median_ms={statistics.median(walls) * 1000:.1f}")
    print(f"elapsed_s={elapsed:.1f}")


if __name__ == "__main__":
    main()
