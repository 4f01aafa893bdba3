#!/usr/bin/env python3
"""A fake Slack for chat approval tests (tests/integration/gateway_chat_approvals_test.cc).

Receives pgwarden-cp's incoming-webhook POSTs on 127.0.0.1 and, for each interactive approval
message, clicks a button the way Slack's interactivity requests do: a POST of
`payload=<url-encoded JSON>` (type block_actions) to pgwarden-cp's callback URL over real TLS,
signed with X-Slack-Request-Timestamp and X-Slack-Signature = "v0=" + hex(HMAC-SHA256(secret,
"v0:" + timestamp + ":" + body)). Before the genuine click it sends a bad signature, an old
timestamp and an unmapped user; after it, an exact replay. Every HTTP status is written to the
results file (JSON lines), with the times the webhook arrived and the decision was answered.

usage: fake_chat.py PORT_FILE RESULTS_FILE CALLBACK_URL CA_FILE SECRET_FILE USER_ID ACTION
"""
import hashlib
import hmac
import http.server
import json
import os
import ssl
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

port_file, results_file, callback_url, ca_file, secret_file, user_id, action = sys.argv[1:8]
with open(secret_file, "rb") as f:
    secret = f.read().strip()
tls = ssl.create_default_context(cafile=ca_file)
lock = threading.Lock()


def record(entry):
    with lock, open(results_file, "a") as f:
        f.write(json.dumps(entry) + "\n")


def sign(key, ts, body):
    mac = hmac.new(key, b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    return "v0=" + mac


def post(ts, signature, body):
    req = urllib.request.Request(callback_url, data=body, method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature})
    try:
        with urllib.request.urlopen(req, context=tls, timeout=20) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def click_body(user, approval_id, trigger):
    payload = {"type": "block_actions", "trigger_id": trigger,
               "user": {"id": user, "username": user.lower()},
               "actions": [{"action_id": action, "block_id": "pgwarden_approval",
                            "value": approval_id, "type": "button"}]}
    return ("payload=" + urllib.parse.quote(json.dumps(payload))).encode()


def click(approval_id, received):
    now = str(int(time.time()))
    body = click_body(user_id, approval_id, "trig-" + approval_id)
    results = {"approval_id": approval_id, "received": received}
    results["bad_signature"] = post(now, sign(b"not-the-secret", now, body), body)[0]
    old = str(int(time.time()) - 600)
    results["old_timestamp"] = post(old, sign(secret, old, body), body)[0]
    stranger = click_body("UNKNOWN1", approval_id, "trig-stranger-" + approval_id)
    results["unmapped_user"] = post(now, sign(secret, now, stranger), stranger)[0]
    good_sig = sign(secret, now, body)
    status, answer = post(now, good_sig, body)
    results["genuine"] = status
    results["answer"] = answer
    results["decided"] = time.time()
    results["replay"] = post(now, good_sig, body)[0]
    record(results)


class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        received = time.time()
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")
        message = json.loads(body)
        approval_id = None
        for block in message.get("blocks", []):
            if block.get("type") == "actions":
                approval_id = block["elements"][0]["value"]
        if approval_id is None:
            record({"message": message.get("text", ""), "received": received})
            return
        record({"webhook": message, "received": received})
        threading.Thread(target=click, args=(approval_id, received)).start()

    def log_message(self, fmt, *args):
        sys.stderr.write("fake_chat: " + (fmt % args) + "\n")


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
tmp = port_file + ".tmp"
with open(tmp, "w") as f:
    f.write(str(server.server_address[1]))
os.rename(tmp, port_file)
server.serve_forever()
