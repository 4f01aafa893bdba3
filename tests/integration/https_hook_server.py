#!/usr/bin/env python3
"""A real HTTPS endpoint for webhook tests: python's TLS server on 127.0.0.1 (port chosen by
the kernel, written to PORT_FILE once listening). Every POST is stored as OUT_DIR/<n>.json,
{"path", "headers", "body"}, and answered 200. Stops on SIGTERM."""
import http.server
import json
import os
import ssl
import sys


def main():
    port_file, cert, key, out_dir = sys.argv[1:5]
    count = [0]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length).decode("utf-8")
            count[0] += 1
            record = {"path": self.path, "headers": dict(self.headers.items()), "body": body}
            tmp = os.path.join(out_dir, "%d.tmp" % count[0])
            with open(tmp, "w") as f:
                json.dump(record, f)
            os.rename(tmp, os.path.join(out_dir, "%d.json" % count[0]))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
