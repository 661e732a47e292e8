"""Mailpit's PyPI client (mailpit-api-client) against Intake's Mailpit-compatible listener.

Run by run.sh with INTAKE_BIN set; starts its own Intake on free loopback ports.
"""
import os
import smtplib
import socket
import subprocess
import tempfile
import time
import struct
import unittest

import httpx
from mailpit.client.api import API

# A 240x160 red PNG.
RED_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAPAAAACgCAIAAAC9uXYyAAABP0lEQVR42u3SQQkAAAjAwPUvrSn8yMElGGsK3pAAQ4OhwdBg"
    "aAwNhgZDg6HB0BgaDA2GBkODoTE0GBoMDYYGQ2NoMDQYGgwNhsbQYGgwNBgaDI2hwdBgaDA0GBpDg6HB0GBoDA2GBkODocHQ"
    "GBoMDYYGQ4OhMTQYGgwNhgZDY2gwNBgaDA2GxtBgaDA0GBoMjaHB0GBoMDQYGkODocHQYGiQAEODocHQYGgMDYYGQ4OhwdAY"
    "GgwNhgZDg6ExNBgaDA2GBkNjaDA0GBoMDYbG0GBoMDQYGgyNocHQYGgwNBgaQ4OhwdBgaAwNhgZDg6HB0BgaDA2GBkODoTE0"
    "GBoMDYYGQ2NoMDQYGgwNhsbQYGgwNBgaDI2hwdBgaDA0GBpDg6HB0GBoMDSGBkODocHQGBoMDYYGQ4OhMTQYGgwNRxZV6XK8"
    "KA4DbQAAAABJRU5ErkJggg=="
)


def jpeg_size(data):
    """(width, height) from a JPEG's start-of-frame segment."""
    assert data[:2] == b"\xff\xd8", "a JPEG"
    i = 2
    while i < len(data):
        marker, length = struct.unpack(">HH", data[i:i + 4])
        if 0xFFC0 <= marker <= 0xFFC2:
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        i += 2 + length
    raise AssertionError("no frame")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class MailpitClientAgainstIntake(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.smtp, cls.http, cls.mailpit = free_port(), free_port(), free_port()
        cls.data = tempfile.TemporaryDirectory()
        env = {k: v for k, v in os.environ.items() if not k.startswith("INTAKE_")}
        env.update({
            "INTAKE_SMTP__LISTEN": f"127.0.0.1:{cls.smtp}",
            "INTAKE_HTTP__LISTEN": f"127.0.0.1:{cls.http}",
            "INTAKE_MAILPIT__LISTEN": f"127.0.0.1:{cls.mailpit}",
            "INTAKE_STORE__PATH": cls.data.name,
            "INTAKE_LOG__LEVEL": "warn",
        })
        cls.proc = subprocess.Popen([os.environ["INTAKE_BIN"], "serve"], env=env)
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", cls.mailpit), 1).close()
                break
            except OSError:
                time.sleep(0.05)
        cls.api = API(f"http://127.0.0.1:{cls.mailpit}", timeout=10)

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        cls.proc.wait(timeout=10)
        cls.data.cleanup()

    def send(self, to, subject):
        with smtplib.SMTP("127.0.0.1", self.smtp, timeout=10) as s:
            s.sendmail("sender@example.net", [to],
                       f"From: Sender <sender@example.net>\r\nTo: {to}\r\nSubject: {subject}\r\n"
                       f"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@example.net>\r\n\r\nbody of {subject}\r\n")

    def test_round_trip(self):
        self.api.delete_messages([])
        self.send("alice@example.test", "first")
        self.send("bob@example.test", "second")
        messages = self.api.get_messages()
        self.assertEqual(messages.total, 2)
        self.assertEqual(messages.count, 2)
        self.assertEqual([m.subject for m in messages.messages], ["second", "first"])
        newest = messages.messages[0]
        self.assertEqual(newest.from_.address, "sender@example.net")
        self.assertEqual(newest.to[0].address, "bob@example.test")
        self.assertFalse(newest.read)

        message = self.api.get_message(newest.id)
        self.assertEqual(message.subject, "second")
        self.assertEqual(message.message_id, "second@example.net")
        self.assertIn("body of second", message.text)
        self.assertTrue(message.read)

        self.api.delete_messages([newest.id])
        self.assertEqual(self.api.get_messages().total, 1)
        # An empty list deletes everything, as Mailpit does.
        self.api.delete_messages([])
        self.assertEqual(self.api.get_messages().total, 0)

    def test_every_other_method(self):
        """put_messages (a form), get_message_headers, get_message_attachment."""
        self.api.delete_messages([])
        with smtplib.SMTP("127.0.0.1", self.smtp, timeout=10) as s:
            s.sendmail("sender@example.net", ["carol@example.test", "hidden@example.test"],
                       "From: Sender <sender@example.net>\r\nTo: carol@example.test\r\n"
                       "Subject: filed\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\n"
                       # The client's Headers model requires Delivered-To (and Content-Type).
                       "Delivered-To: carol@example.test\r\n"
                       "Message-ID: <filed@example.net>\r\nMIME-Version: 1.0\r\n"
                       "Content-Type: multipart/mixed; boundary=B\r\n\r\n"
                       "--B\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
                       "--B\r\nContent-Type: text/csv; name=r.csv\r\n"
                       "Content-Disposition: attachment; filename=r.csv\r\n\r\na,b\r\n--B--\r\n")
        newest = self.api.get_messages().messages[0]
        self.assertFalse(newest.read)
        self.api.put_messages([newest.id], "Read", True)
        self.assertTrue(self.api.get_messages().messages[0].read)
        self.api.put_messages([newest.id], "Read", False)
        self.assertFalse(self.api.get_messages().messages[0].read)

        headers = self.api.get_message_headers(newest.id)
        self.assertEqual(headers.message_id, ["<filed@example.net>"])
        self.assertEqual(headers.from_, ["Sender <sender@example.net>"])

        message = self.api.get_message(newest.id)
        self.assertEqual([c.address for c in message.bcc], ["hidden@example.test"])
        self.assertEqual([a.file_name for a in message.attachments], ["r.csv"])
        part = message.attachments[0].part_id
        self.assertEqual(part, "2")
        self.assertIn("a,b", self.api.get_message_attachment(newest.id, part))

    def test_checks_the_client_has_no_method_for(self):
        """mailpit-api-client 1.0.0 has no thumbnail, HTML-check or link-check method: a suite
        calls them at the client's own URL, as it would against Mailpit."""
        self.api.delete_messages([])
        with smtplib.SMTP("127.0.0.1", self.smtp, timeout=10) as s:
            s.sendmail("sender@example.net", ["lee@example.test"],
                       "From: Sender <sender@example.net>\r\nTo: lee@example.test\r\n"
                       "Subject: checks\r\nMIME-Version: 1.0\r\n"
                       "Content-Type: multipart/mixed; boundary=B\r\n\r\n"
                       "--B\r\nContent-Type: text/html\r\n\r\n"
                       "<p style=\"display: flex\"><a href=\"http://127.0.0.1:9/\">x</a></p>\r\n"
                       "--B\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n"
                       "Content-Disposition: attachment; filename=red.png\r\n\r\n"
                       f"{RED_PNG}\r\n--B--\r\n")
        message = self.api.get_message(self.api.get_messages().messages[0].id)
        self.assertEqual([a.file_name for a in message.attachments], ["red.png"])
        base = f"{self.api.mailpit_url}/{API.MESSAGE_ENDPOINT}/{message.id}"

        thumb = httpx.get(f"{base}/part/{message.attachments[0].part_id}/thumb", timeout=10)
        self.assertEqual(thumb.status_code, 200)
        self.assertEqual(thumb.headers["content-type"], "image/jpeg")
        self.assertEqual(jpeg_size(thumb.content), (180, 120))

        check = httpx.get(f"{base}/html-check", timeout=10).json()
        slugs = {w["Slug"]: w for w in check["Warnings"]}
        self.assertIn("css-display-flex", slugs)
        self.assertEqual(slugs["css-display-flex"]["Score"]["Found"], 1)
        self.assertGreater(check["Total"]["Tests"], 200)

        # Outbound requests are the operator's choice: off unless mailpit.link_check is set.
        links = httpx.get(f"{base}/link-check", timeout=10)
        self.assertEqual(links.status_code, 400)
        self.assertIn("mailpit.link_check", links.text)


if __name__ == "__main__":
    unittest.main()
