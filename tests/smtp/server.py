#!/usr/bin/env python3
"""A real SMTP server (aiosmtpd) for the alert tests (tests/tests/alerts.rs).

Every message received is parsed with Python's email package and written as one JSON file
(<seq>.json: envelope from/to, header From/To, the decoded Subject, the raw Subject header,
Message-ID, the content type, and the decoded text/plain and text/html parts) into --dir,
written to a temporary name first so a reader never sees half a file.

Prints one line {"ready": <port>} on stdout once it accepts connections.

  --port N             listen on 127.0.0.1:N (0 = any free port)
  --dir DIR            where the messages go
  --auth USER:PASS     require AUTH (PLAIN/LOGIN) with these credentials (no TLS needed)
  --tls CERT KEY       implicit TLS (smtps) with this certificate and key
  --hang               accept TCP connections and never answer (no SMTP at all)
"""

import argparse
import asyncio
import json
import os
import signal
import socket
import ssl
import sys
import threading
import time
import warnings

warnings.filterwarnings("ignore")
from email import policy
from email.parser import BytesParser


def serve_hanging(port):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(64)
    print(json.dumps({"ready": srv.getsockname()[1]}), flush=True)
    held = []
    while True:
        conn, _ = srv.accept()
        held.append(conn)  # never answered, never closed


class Handler:
    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.seq = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        msg = BytesParser(policy=policy.default).parsebytes(envelope.original_content or envelope.content)
        text = html = None
        for part in msg.walk():
            ctype = part.get_content_type()
            if part.is_multipart():
                continue
            if ctype == "text/plain" and text is None:
                text = part.get_content()
            elif ctype == "text/html" and html is None:
                html = part.get_content()
        raw = (envelope.original_content or envelope.content).decode("utf-8", "replace")
        raw_subject = ""
        for line in raw.split("\r\n"):
            if line.lower().startswith("subject:"):
                raw_subject = line
                break
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "from": str(msg["From"]),
            "to": [a.addr_spec for a in msg["To"].addresses] if msg["To"] else [],
            "subject": str(msg["Subject"]),
            "raw_subject": raw_subject,
            "message_id": str(msg["Message-ID"]),
            "content_type": msg.get_content_type(),
            "text": text,
            "html": html,
            "received_ms": int(time.time() * 1000),
        }
        with self.lock:
            self.seq += 1
            seq = self.seq
        # Sequence numbers continue across restarts of the server on the same directory.
        name = "%d-%06d.json" % (os.getpid(), seq)
        tmp = os.path.join(self.out_dir, "." + name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f, ensure_ascii=False)
        os.rename(tmp, os.path.join(self.out_dir, name))
        return "250 OK"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--dir")
    ap.add_argument("--auth")
    ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    ap.add_argument("--hang", action="store_true")
    a = ap.parse_args()
    if a.hang:
        serve_hanging(a.port)
        return
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    port = a.port
    if port == 0:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
    kwargs = {}
    if a.auth:
        user, password = a.auth.split(":", 1)

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (isinstance(auth_data, LoginPassword)
                  and auth_data.login.decode() == user and auth_data.password.decode() == password)
            # handled=False: aiosmtpd answers 535 itself (handled=True would leave the client hanging).
            return AuthResult(success=ok, handled=False)

        kwargs.update(authenticator=authenticator, auth_required=True, auth_require_tls=False)
    ssl_context = None
    if a.tls:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(a.tls[0], a.tls[1])
    os.makedirs(a.dir, exist_ok=True)
    controller = Controller(Handler(a.dir), hostname="127.0.0.1", port=port, ssl_context=ssl_context,
                            server_kwargs=kwargs, ready_timeout=10)
    controller.start()
    print(json.dumps({"ready": port}), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
