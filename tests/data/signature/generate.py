#!/usr/bin/env python3
"""Writes vectors.json, the known answers of tests/unit/test_signature.c.

The expected values are computed here with Python's hmac and base64 modules,
not by cronfence's code, from DESIGN §5:

  v2      = hex(HMAC-SHA256(secret, t "\\n" job "\\n" token "\\n" key "\\n" body))
  webhook = base64(HMAC-SHA256(secret, key "." t "." body))   (Standard Webhooks v1)

The key of both is the raw bytes of the secret (given in hex, so any byte but
NUL can be tried). The last vector is the Standard Webhooks example: secret
whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, id msg_p5jXN8AQM9LWM0D4loKWxJek, its
expected signature v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= is
checked below, so this generator agrees with that scheme's libraries.

    python3 tests/data/signature/generate.py > tests/data/signature/vectors.json
"""

import base64
import hashlib
import hmac
import json

CASES = [
    # secret, t, job, token, key, body, note
    (b"whsec_test", 1763712000, "nightly-report", "8589934593",
     "nightly-report@2026-11-21T08:00:00.000Z",
     b'{"job":"nightly-report","fencing_token":8589934593}', "a scheduled delivery"),
    (b"whsec_test", 1763712000, "nightly-report", "8589934593",
     "nightly-report@2026-11-21T08:00:00.000Z", b"",
     "empty body: v2 still ends with the fourth newline, webhook with the second dot"),
    (b"whsec_test", 1763712000, "job-a", "8589934593",
     "job-a@manual-00112233445566778899aabbccddeeff",
     b'{"job":"job-a","trigger":"manual"}', "a manual delivery of job-a"),
    (b"whsec_test", 1763712000, "job-b", "8589934593",
     "job-a@manual-00112233445566778899aabbccddeeff",
     b'{"job":"job-a","trigger":"manual"}', "the same replayed as job-b: v2 differs"),
    (b"k" * 100, 0, "a", "1", "a@b", b"line1\nline2\n",
     "a 100-byte secret (hashed first by HMAC), t = 0, newlines in the body"),
    ("s3cr\u00e9t".encode(), 4102444800, "job.x_y-z", "9223372036854775807",
     "job.x_y-z@2099-12-31T23:59:59.999Z", b'{"payload":null}',
     "UTF-8 secret, the largest token, a far-future t"),
    (b"", 1, "j", "2", "j@k", b"body", "an empty secret still computes (verify refuses it)"),
    (base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), 1614265330, "test", "1",
     "msg_p5jXN8AQM9LWM0D4loKWxJek", b'{"test": 2432232314}',
     "the Standard Webhooks example (webhook-id msg_p5jXN8AQM9LWM0D4loKWxJek)"),
]


def mac(secret, message):
    return hmac.new(secret, message, hashlib.sha256).digest()


def main():
    vectors = []
    for secret, t, job, token, key, body, note in CASES:
        v2 = mac(secret, f"{t}\n{job}\n{token}\n{key}\n".encode() + body).hex()
        webhook = base64.b64encode(mac(secret, f"{key}.{t}.".encode() + body)).decode()
        vectors.append({"note": note, "secret_hex": secret.hex(), "t": t, "job": job,
                        "token": token, "key": key, "body": body.decode(), "v2": v2,
                        "webhook": webhook})
    assert vectors[-1]["webhook"] == "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    print(json.dumps(vectors, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
