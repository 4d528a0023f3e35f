#!/usr/bin/env python3
"""Checks payhook's JOSE output with independent implementations.

payhook makes its ECOM JWEs with josekit and its UAPAY JWSs with jsonwebtoken (Rust). This
script opens them with other libraries — jwcrypto for the JWE, PyJWT for the JWS — so a bug
shared by payhook's encoder and its own unit tests cannot hide.

Reads one JSON job on stdin:
  {"kind": "jwe", "private_jwk": {...}, "token": "<compact JWE>"}
  {"kind": "jws", "key": "<the merchant's secret string>", "token": "<compact JWS>"}
On success prints the decrypted / verified payload (a JSON document) on stdout and exits 0.
On a failed check prints the reason on stderr and exits 1. When the libraries are missing it
exits 3 with the command that installs them (requirements-test.txt at the repository root).
"""

import json
import sys

EXIT_CHECK_FAILED = 1
EXIT_BAD_JOB = 2
EXIT_MISSING_LIBRARY = 3

# The only algorithms payhook may use: a token made with any other is refused.
JWE_ALGS = ["ECDH-ES+A256KW", "A256GCM"]
JWS_ALGS = ["HS256"]


def missing_library(error):
    sys.stderr.write(
        f"jose_check.py: {error}\n"
        "Install the cross-check libraries: pip install -r requirements-test.txt\n"
    )
    sys.exit(EXIT_MISSING_LIBRARY)


def decrypt_jwe(job):
    try:
        from jwcrypto import jwe, jwk
    except ImportError as error:
        missing_library(error)
    key = jwk.JWK(**job["private_jwk"])
    token = jwe.JWE()
    token.allowed_algs = JWE_ALGS
    token.deserialize(job["token"], key=key)
    header = json.loads(token.objects["protected"])
    if header.get("alg") != JWE_ALGS[0] or header.get("enc") != JWE_ALGS[1]:
        raise ValueError(f"unexpected JWE header {header}")
    return json.loads(token.payload)


def verify_jws(job):
    try:
        import jwt
    except ImportError as error:
        missing_library(error)
    header = jwt.get_unverified_header(job["token"])
    if header != {"alg": "HS256", "typ": "JWT"}:
        raise ValueError(f"unexpected JWS header {header}")
    return jwt.decode(
        job["token"], job["key"], algorithms=JWS_ALGS, options={"require": ["iat"]}
    )


def main():
    try:
        job = json.load(sys.stdin)
        check = {"jwe": decrypt_jwe, "jws": verify_jws}[job["kind"]]
    except (ValueError, KeyError, TypeError) as error:
        sys.stderr.write(f"jose_check.py: bad job: {error!r}\n")
        return EXIT_BAD_JOB
    try:
        payload = check(job)
    except Exception as error:  # any library error is a failed check, reported as such
        sys.stderr.write(f"jose_check.py: {job['kind']} check failed: {type(error).__name__}: {error}\n")
        return EXIT_CHECK_FAILED
    json.dump(payload, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
