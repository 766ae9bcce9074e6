"""A student's browser, reduced to HTTP and one websocket (run INSIDE the container with the
hub's venv python: /opt/cdsops-jupyterhub/bin/python hubclient.py COOKIE USER ACTION ...).

The sign-in gate's session cookie (signed by the test with the scenario's cookie key) is the
only credential; everything else (the hub's cookies, the server's OAuth cookie, _xsrf) is
picked up the way a browser would, through nginx on https://127.0.0.1. Prints one JSON line.
"""

import http.cookiejar
import json
import ssl
import sys
import time
import urllib.error
import urllib.request
import uuid

BASE = "https://127.0.0.1"
CTX = ssl.create_default_context()
CTX.check_hostname = False
CTX.verify_mode = ssl.CERT_NONE


class Browser:
    def __init__(self, gate_cookie):
        """``gate_cookie``: NAME=VALUE of the gate's session cookie (empty: signed out)."""
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=CTX),
                                                  urllib.request.HTTPCookieProcessor(self.jar))
        self.gate_cookie = gate_cookie
        if gate_cookie:
            name, value = gate_cookie.split("=", 1)
            self.jar.set_cookie(http.cookiejar.Cookie(
                0, name, value, None, False, "127.0.0.1", False, False, "/", True,
                True, None, True, None, None, {}))

    def xsrf(self, path="/"):
        """The _xsrf cookie a browser would send with ``path`` (the hub's and each server's
        have their own paths): the one with the longest matching path."""
        matching = [c for c in self.jar if c.name == "_xsrf" and path.startswith(c.path)]
        return max(matching, key=lambda c: len(c.path)).value if matching else ""

    def request(self, method, path, body=None, headers=None):
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"X-XSRFToken": self.xsrf(path), "Content-Type": "application/json"}
        hdrs.update(headers or {})
        req = urllib.request.Request(BASE + path, data=data, method=method, headers=hdrs)
        try:
            with self.opener.open(req, timeout=60) as resp:
                return resp.status, resp.geturl(), resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.geturl(), exc.read().decode("utf-8", "replace")

    def spawn(self, user):
        self.request("GET", "/hub/spawn")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status, url, _ = self.request("GET", f"/user/{user}/lab")  # OAuth dance, _xsrf cookie
            if status == 200 and f"/user/{user}/lab" in url:
                return {"ready": True}
            time.sleep(1)
        return {"ready": False}

    def cookie_header(self):
        parts = [f"{c.name}={c.value}" for c in self.jar]
        return "; ".join(parts)

    def run(self, user, code, timeout=90):
        from tornado.httpclient import HTTPRequest
        from tornado.ioloop import IOLoop
        from tornado.websocket import websocket_connect

        status, _, body = self.request("POST", f"/user/{user}/api/kernels", {"name": "ir"})
        if status != 201:
            return {"error": f"kernel start: {status} {body[:300]}"}
        kid = json.loads(body)["id"]

        async def talk():
            url = f"wss://127.0.0.1/user/{user}/api/kernels/{kid}/channels"
            ws = await websocket_connect(HTTPRequest(url, headers={"Cookie": self.cookie_header()},
                                                     ssl_options=CTX, validate_cert=False))
            msg_id = uuid.uuid4().hex
            ws.write_message(json.dumps({
                "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": user,
                           "session": uuid.uuid4().hex, "version": "5.3", "date": ""},
                "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                "content": {"code": code, "silent": False, "store_history": True,
                            "user_expressions": {}, "allow_stdin": False}}))
            out, deadline = {"stdout": "", "result": "", "error": "", "states": []}, time.monotonic() + timeout
            while time.monotonic() < deadline:
                raw = await ws.read_message()
                if raw is None:
                    out["states"].append("closed")
                    break
                m = json.loads(raw)
                t, c = m["msg_type"], m.get("content", {})
                if t == "status":
                    out["states"].append(c.get("execution_state"))
                    if c.get("execution_state") in ("restarting", "dead"):
                        break
                if m.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                if t == "stream":
                    out["stdout"] += c.get("text", "")
                elif t in ("execute_result", "display_data"):
                    out["result"] += c.get("data", {}).get("text/plain", "")
                elif t == "error":
                    out["error"] += c.get("ename", "") + ": " + c.get("evalue", "")
                elif t == "status" and c.get("execution_state") == "idle":
                    break
            ws.close()
            return out

        result = IOLoop.current().run_sync(talk, timeout=timeout + 30)
        self.request("DELETE", f"/user/{user}/api/kernels/{kid}")
        return result

    def upload(self, user, name, size_mb):
        import base64

        chunk = base64.b64encode(b"x" * (1024 * 1024)).decode()
        statuses = []
        for i in range(1, size_mb + 1):
            n = -1 if i == size_mb else i
            status, _, _ = self.request("PUT", f"/user/{user}/api/contents/{name}",
                                        {"type": "file", "format": "base64", "content": chunk, "chunk": n})
            statuses.append(status)
            if status >= 400:
                break
        return {"statuses": statuses}


def main():
    cookie, user, action, *args = sys.argv[1:]
    b = Browser(cookie if cookie != "-" else "")
    if action == "spawn":
        out = b.spawn(user)
    elif action == "run":
        b.spawn(user)
        out = b.run(user, args[0])
    elif action == "upload":
        b.spawn(user)
        out = b.upload(user, args[0], int(args[1]))
    elif action in ("GET", "POST", "DELETE"):
        extra = dict(h.split(": ", 1) for h in args[1:])
        if user != "-":
            b.spawn(user)
        elif cookie != "-":
            # the hub's own login (auto_login from nginx's header), with the same extra headers
            b.request("GET", "/hub/login?next=%2Fhub%2Fhome", headers=extra)
        status, url, body = b.request(action, args[0], {} if action == "POST" else None, extra)
        out = {"status": status, "url": url, "body": body[:2000]}
    else:
        raise SystemExit(f"unknown action {action}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
