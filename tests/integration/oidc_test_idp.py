#!/usr/bin/env python3
"""A small but real OpenID Connect identity provider for tests, over HTTPS (python's TLS server
on 127.0.0.1; the port, chosen by the kernel, is written to PORT_FILE once listening; its
issuer is https://127.0.0.1:PORT). RS256 id_tokens signed with the `cryptography` package.

  GET  /jwks                  the signing key (kid "idp-1")
  GET  /authorize             authorization code flow, auto-consent as the current user:
                              checks client_id, redirect_uri, response_type=code,
                              code_challenge_method=S256; redirects to redirect_uri with
                              code and state
  POST /token                 grant_type=authorization_code: the code is single-use and
                              bound to client_id, redirect_uri and the PKCE challenge
                              (BASE64URL(SHA256(code_verifier)) must match, else
                              400 invalid_grant); grant_type=urn:...:device_code: the
                              device code (approved at once) -> tokens
  POST /device                RFC 8628 device authorization (interval 1, auto-approved)
  GET  /control/user?sub=&groups=a,b&nonce=   the user the next logins authenticate as
                              (nonce: override the id_token nonce, for negative tests)
  GET  /mint?sub=&groups=&aud=&exp_in=&iss=&key=other   a signed token for bearer tests
  GET  /log                   JSON list of what happened (token endpoint outcomes)
Usage: oidc_test_idp.py PORT_FILE CERT KEY CLIENT_ID REDIRECT_URI
Stops on SIGTERM."""
import base64
import hashlib
import http.server
import json
import os
import secrets
import ssl
import sys
import threading
import time
import urllib.parse

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def int_b64u(n):
    return b64u(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def main():
    port_file, cert, key, client_id, redirect_uri = sys.argv[1:6]
    signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = signing.public_key().public_numbers()
    jwks = {"keys": [{"kty": "RSA", "kid": "idp-1", "use": "sig", "alg": "RS256",
                      "n": int_b64u(pub.n), "e": int_b64u(pub.e)}]}
    lock = threading.Lock()
    state = {"user": {"sub": "alice", "groups": ["reviewers"]}, "nonce": None}
    codes = {}
    devices = {}
    log = []
    issuer = [""]

    def sign(claims, key_obj=signing):
        header = {"alg": "RS256", "kid": "idp-1", "typ": "JWT"}
        signing_input = (b64u(json.dumps(header).encode()) + "." +
                         b64u(json.dumps(claims).encode()))
        sig = key_obj.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + b64u(sig)

    def tokens_for(user, nonce, aud=None, exp_in=300, iss=None):
        now = int(time.time())
        claims = {"iss": iss or issuer[0], "aud": aud or client_id, "sub": user["sub"],
                  "preferred_username": user["sub"], "groups": user["groups"],
                  "iat": now, "exp": now + exp_in}
        if nonce is not None:
            claims["nonce"] = nonce
        return claims

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def reply(self, status, body, headers=None):
            data = json.dumps(body).encode() if not isinstance(body, bytes) else body
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
            self.close_connection = True

        def form(self):
            length = int(self.headers.get("Content-Length", "0"))
            return {k: v[0] for k, v in
                    urllib.parse.parse_qs(self.rfile.read(length).decode()).items()}

        def do_GET(self):
            url = urllib.parse.urlparse(self.path)
            q = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
            if url.path == "/jwks":
                return self.reply(200, jwks)
            if url.path == "/control/user":
                with lock:
                    state["user"] = {"sub": q.get("sub", "alice"),
                                     "groups": [g for g in q.get("groups", "").split(",") if g]}
                    state["nonce"] = q.get("nonce")
                return self.reply(200, {"ok": True})
            if url.path == "/log":
                with lock:
                    return self.reply(200, log)
            if url.path == "/mint":
                user = {"sub": q.get("sub", "alice"),
                        "groups": [g for g in q.get("groups", "").split(",") if g]}
                claims = tokens_for(user, None, q.get("aud"), int(q.get("exp_in", "300")),
                                    q.get("iss"))
                key_obj = other if q.get("key") == "other" else signing
                return self.reply(200, {"token": sign(claims, key_obj)})
            if url.path == "/authorize":
                problems = []
                if q.get("client_id") != client_id:
                    problems.append("client_id")
                if q.get("redirect_uri") != redirect_uri:
                    problems.append("redirect_uri")
                if q.get("response_type") != "code":
                    problems.append("response_type")
                if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
                    problems.append("pkce")
                if not q.get("state") or not q.get("nonce"):
                    problems.append("state/nonce")
                if problems:
                    return self.reply(400, {"error": "invalid_request", "bad": problems})
                code = secrets.token_urlsafe(24)
                with lock:
                    nonce = state["nonce"] if state["nonce"] is not None else q["nonce"]
                    codes[code] = {"challenge": q["code_challenge"], "user": dict(state["user"]),
                                   "nonce": nonce, "redirect_uri": q["redirect_uri"]}
                location = redirect_uri + "?" + urllib.parse.urlencode(
                    {"code": code, "state": q["state"]})
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                return
            return self.reply(404, {"error": "not_found"})

        def do_POST(self):
            url = urllib.parse.urlparse(self.path)
            f = self.form()
            if url.path == "/device":
                if f.get("client_id") != client_id:
                    return self.reply(400, {"error": "invalid_client"})
                device_code = secrets.token_urlsafe(24)
                with lock:
                    devices[device_code] = dict(state["user"])
                base = issuer[0]
                return self.reply(200, {"device_code": device_code, "user_code": "WDJB-MJHT",
                                        "verification_uri": base + "/activate",
                                        "verification_uri_complete": base + "/activate?c=WDJB",
                                        "interval": 1, "expires_in": 60})
            if url.path != "/token":
                return self.reply(404, {"error": "not_found"})
            grant = f.get("grant_type")
            if grant == "urn:ietf:params:oauth:grant-type:device_code":
                with lock:
                    user = devices.pop(f.get("device_code", ""), None)
                    log.append({"grant": "device_code", "ok": user is not None})
                if user is None or f.get("client_id") != client_id:
                    return self.reply(400, {"error": "invalid_grant"})
                claims = tokens_for(user, None)
                return self.reply(200, {"id_token": sign(claims), "access_token": "opaque",
                                        "token_type": "Bearer", "expires_in": 300})
            if grant != "authorization_code":
                return self.reply(400, {"error": "unsupported_grant_type"})
            with lock:
                entry = codes.pop(f.get("code", ""), None)  # single use
                verifier = f.get("code_verifier", "")
                expected = entry["challenge"] if entry else None
                got = b64u(hashlib.sha256(verifier.encode()).digest()) if verifier else None
                if entry is None:
                    outcome = "unknown_code"
                elif f.get("client_id") != client_id or f.get("redirect_uri") != entry["redirect_uri"]:
                    outcome = "client_mismatch"
                elif got != expected:
                    outcome = "pkce_mismatch"
                else:
                    outcome = "ok"
                log.append({"grant": "authorization_code", "outcome": outcome})
            if outcome != "ok":
                return self.reply(400, {"error": "invalid_grant", "error_description": outcome})
            claims = tokens_for(entry["user"], entry["nonce"])
            return self.reply(200, {"id_token": sign(claims), "access_token": "opaque",
                                    "token_type": "Bearer", "expires_in": 300})

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    issuer[0] = "https://127.0.0.1:%d" % server.server_address[1]
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
