#!/usr/bin/env python3
"""Read and set a Kafka cluster's finalized features (KIP-584), stdlib only.

A minimal Kafka wire-protocol client for the two requests scripts/broker.sh needs:

  ApiVersions    (key 18, v3): supported + finalized features, in tagged fields.
  UpdateFeatures (key 57, v1): set a finalized feature level.

Why: librdkafka does not speak KIP-890 transactions (transaction.version 2), which the
test broker (crabka-broker) finalizes by default; its transactional producer gets fenced
after the first commit. `--set transaction.version=1` fixes that (and persists in the
broker's metadata log).

Examples:
  kafka_features.py --bootstrap 127.0.0.1:19092 --describe
  kafka_features.py --bootstrap 127.0.0.1:19092 --set transaction.version=1

Going below the current level is a downgrade: with --upgrade-type auto (the default) a
lower target is sent as a safe downgrade (2), anything else as an upgrade (1). After an
update the new levels are read back through ApiVersions and checked. Exit status: 0 on
success, 1 on a Kafka error or a failed check, 2 on bad usage or no connection.
"""

import argparse
import os
import socket
import struct
import sys
import time

API_VERSIONS = 18
UPDATE_FEATURES = 57
CLIENT_ID = "sluice-features"

UPGRADE_TYPES = {"upgrade": 1, "safe-downgrade": 2, "unsafe-downgrade": 3}

ERRORS = {
    0: "NONE",
    7: "REQUEST_TIMED_OUT",
    15: "COORDINATOR_NOT_AVAILABLE",
    31: "CLUSTER_AUTHORIZATION_FAILED",
    35: "UNSUPPORTED_VERSION",
    41: "NOT_CONTROLLER",
    42: "INVALID_REQUEST",
    95: "INVALID_UPDATE_VERSION",
    96: "FEATURE_UPDATE_FAILED",
}
# Worth another try until the deadline (broker still electing its controller, etc.).
RETRIABLE = {7, 15, 41}


class KafkaError(Exception):
    pass


def err_name(code):
    return f"{code} ({ERRORS.get(code, 'see the Kafka protocol error table')})"


# ---- encoding ---------------------------------------------------------------------------

def uvarint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def compact_string(s):
    if s is None:
        return uvarint(0)
    b = s.encode()
    return uvarint(len(b) + 1) + b


def compact_array(items, encode):
    return uvarint(len(items) + 1) + b"".join(encode(i) for i in items)


NO_TAGS = uvarint(0)


def request_header_v2(api_key, version, correlation_id):
    # client_id stays a classic nullable string (int16 length) even in header v2.
    cid = CLIENT_ID.encode()
    return struct.pack(">hhih", api_key, version, correlation_id, len(cid)) + cid + NO_TAGS


# ---- decoding ---------------------------------------------------------------------------

class Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise KafkaError(f"truncated response (wanted {n} bytes at offset {self.pos} of {len(self.data)})")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def unpack(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def int8(self):
        return self.unpack(">b")

    def int16(self):
        return self.unpack(">h")

    def int32(self):
        return self.unpack(">i")

    def int64(self):
        return self.unpack(">q")

    def uvarint(self):
        shift = n = 0
        while True:
            b = self.take(1)[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7
            if shift > 63:
                raise KafkaError("malformed varint in response")

    def compact_string(self):
        n = self.uvarint()
        return None if n == 0 else self.take(n - 1).decode()

    def compact_array(self, decode):
        n = self.uvarint()
        return None if n == 0 else [decode(self) for _ in range(n - 1)]

    def tagged_fields(self):
        """Returns {tag: raw bytes}."""
        tags = {}
        for _ in range(self.uvarint()):
            tag = self.uvarint()
            tags[tag] = self.take(self.uvarint())
        return tags


# ---- connection -------------------------------------------------------------------------

class Connection:
    def __init__(self, host, port, timeout):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.correlation_id = 0

    def close(self):
        self.sock.close()

    def _recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            buf += chunk
        return bytes(buf)

    def request(self, api_key, version, body, flexible_response_header):
        self.correlation_id += 1
        msg = request_header_v2(api_key, version, self.correlation_id) + body
        self.sock.sendall(struct.pack(">i", len(msg)) + msg)
        size = struct.unpack(">i", self._recv_exact(4))[0]
        r = Reader(self._recv_exact(size))
        cid = r.int32()
        if cid != self.correlation_id:
            raise KafkaError(f"correlation id mismatch: sent {self.correlation_id}, got {cid}")
        if flexible_response_header:
            r.tagged_fields()
        return r

    def api_versions(self):
        """ApiVersions v3. Returns dict with api ranges and features."""
        body = compact_string(CLIENT_ID) + compact_string("1.0") + NO_TAGS
        # ApiVersions responses always use response header v0 (no tagged fields).
        r = self.request(API_VERSIONS, 3, body, flexible_response_header=False)
        error = r.int16()
        apis = r.compact_array(lambda r: (r.int16(), r.int16(), r.int16(), r.tagged_fields())[:3]) or []
        if error != 0:
            raise KafkaError(f"ApiVersions failed: error {err_name(error)}")
        r.int32()  # throttle_time_ms
        tags = r.tagged_fields()
        supported, finalized, epoch = {}, {}, -1
        if 0 in tags:
            t = Reader(tags[0])
            for name, lo, hi in t.compact_array(lambda t: (t.compact_string(), t.int16(), t.int16(), t.tagged_fields())[:3]) or []:
                supported[name] = (lo, hi)
        if 1 in tags:
            epoch = Reader(tags[1]).int64()
        if 2 in tags:
            t = Reader(tags[2])
            # FinalizedFeatureKey: name, max_version_level, min_version_level.
            for name, hi, lo in t.compact_array(lambda t: (t.compact_string(), t.int16(), t.int16(), t.tagged_fields())[:3]) or []:
                finalized[name] = (lo, hi)
        return {
            "apis": {key: (lo, hi) for key, lo, hi in apis},
            "supported": supported,
            "finalized": finalized,
            "epoch": epoch,
        }

    def update_features(self, updates, validate_only, timeout_ms):
        """UpdateFeatures v1. updates: [(name, level, upgrade_type)].
        Returns (top error, top message, [(name, error, message)])."""
        body = (
            struct.pack(">i", timeout_ms)
            + compact_array(updates, lambda u: compact_string(u[0]) + struct.pack(">hb", u[1], u[2]) + NO_TAGS)
            + struct.pack(">?", validate_only)
            + NO_TAGS
        )
        r = self.request(UPDATE_FEATURES, 1, body, flexible_response_header=True)
        r.int32()  # throttle_time_ms
        error, message = r.int16(), r.compact_string()
        results = r.compact_array(lambda r: (r.compact_string(), r.int16(), r.compact_string(), r.tagged_fields())[:3]) or []
        return error, message, results


def connect(bootstrap, deadline, io_timeout):
    """Connects, retrying until the deadline (the broker may still be starting)."""
    host, _, port = bootstrap.rpartition(":")
    if not host or not port.isdigit():
        usage_error(f"--bootstrap must be host:port, got {bootstrap!r}")
    host = host.strip("[]")
    last = None
    while True:
        try:
            return Connection(host, int(port), io_timeout)
        except OSError as e:
            last = e
        if time.monotonic() >= deadline:
            print(f"kafka_features: error: cannot connect to {bootstrap}: {last}", file=sys.stderr)
            sys.exit(2)
        time.sleep(0.5)


# ---- commands ---------------------------------------------------------------------------

def describe(conn):
    info = conn.api_versions()
    ufv = info["apis"].get(UPDATE_FEATURES)
    print(f"ApiVersions: {len(info['apis'])} APIs; UpdateFeatures versions "
          f"{'%d-%d' % ufv if ufv else 'not supported'}")
    print(f"finalized features (epoch {info['epoch']}):")
    for name, (_, hi) in sorted(info["finalized"].items()):
        print(f"  {name}={hi}")
    print("supported features:")
    for name, (lo, hi) in sorted(info["supported"].items()):
        print(f"  {name}: {lo}-{hi}")
    return info


def usage_error(msg):
    print(f"kafka_features: error: {msg}", file=sys.stderr)
    sys.exit(2)


def parse_set(values):
    updates = {}
    for v in values:
        name, sep, level = v.partition("=")
        if not sep or not name or not level.lstrip("-").isdigit():
            usage_error(f"--set wants FEATURE=LEVEL, got {v!r}")
        updates[name] = int(level)
    return updates


def set_features(conn, bootstrap, wanted, upgrade_type, validate_only, deadline, timeout_ms):
    info = conn.api_versions()
    ufv = info["apis"].get(UPDATE_FEATURES)
    if not ufv or not ufv[0] <= 1 <= ufv[1]:
        print(f"kafka_features: error: {bootstrap} does not support UpdateFeatures v1 "
              f"(advertises {ufv})", file=sys.stderr)
        return 1

    def current(name):
        return info["finalized"].get(name, (0, 0))[1]

    updates = []
    for name, level in wanted.items():
        cur = current(name)
        if cur == level and not validate_only:
            print(f"{name} is already {level}")
            continue
        if upgrade_type == "auto":
            kind = UPGRADE_TYPES["safe-downgrade"] if level < cur else UPGRADE_TYPES["upgrade"]
        else:
            kind = UPGRADE_TYPES[upgrade_type]
        updates.append((name, level, kind))
    if not updates:
        return 0

    while True:
        error, message, results = conn.update_features(updates, validate_only, timeout_ms)
        retriable = error in RETRIABLE or any(e in RETRIABLE for _, e, _ in results)
        if not retriable or time.monotonic() >= deadline:
            break
        time.sleep(0.5)

    failed = False
    if error != 0:
        print(f"kafka_features: error: UpdateFeatures failed: error {err_name(error)}: {message}", file=sys.stderr)
        failed = True
    for name, code, msg in results:
        if code != 0:
            print(f"kafka_features: error: {name}: error {err_name(code)}: {msg}", file=sys.stderr)
            failed = True
    returned = {name for name, _, _ in results}
    for name, _, _ in updates:
        if error == 0 and name not in returned:
            print(f"kafka_features: error: no result for {name} in the response", file=sys.stderr)
            failed = True
    if failed:
        return 1
    for name, level, kind in updates:
        verb = {1: "upgrade", 2: "safe downgrade", 3: "unsafe downgrade"}[kind]
        print(f"{name}: {current(name)} -> {level} ({verb}){' validated only' if validate_only else ''}: OK")
    if validate_only:
        return 0

    # Read back: the finalized levels reach the broker's metadata image asynchronously.
    while True:
        info = conn.api_versions()
        wrong = {n: current(n) for n, lvl in wanted.items() if current(n) != lvl}
        if not wrong:
            print("verified via ApiVersions: " + ", ".join(f"{n}={l}" for n, l in wanted.items()))
            return 0
        if time.monotonic() >= deadline:
            print("kafka_features: error: after the update ApiVersions still reports "
                  + ", ".join(f"{n}={l} (wanted {wanted[n]})" for n, l in wrong.items()), file=sys.stderr)
            return 1
        time.sleep(0.2)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", default=(os.environ.get("SLUICE_BROKERS") or "127.0.0.1:19092").split(",")[0],
                   help="broker host:port (default: first of $SLUICE_BROKERS, else 127.0.0.1:19092)")
    p.add_argument("--describe", action="store_true", help="print supported and finalized features")
    p.add_argument("--set", action="append", default=[], metavar="FEATURE=LEVEL",
                   help="finalize FEATURE at LEVEL (repeatable), e.g. transaction.version=1")
    p.add_argument("--upgrade-type", choices=["auto", *UPGRADE_TYPES], default="auto",
                   help="auto: safe-downgrade when going below the current level, else upgrade")
    p.add_argument("--validate-only", action="store_true", help="ask the broker to validate, not apply")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="overall seconds to wait for the broker, retries and read-back (default 30)")
    args = p.parse_args()
    if not args.describe and not args.set:
        p.error("nothing to do: give --describe and/or --set FEATURE=LEVEL")
    wanted = parse_set(args.set)

    deadline = time.monotonic() + args.timeout
    conn = connect(args.bootstrap, deadline, io_timeout=max(5.0, min(args.timeout, 30.0)))
    try:
        rc = 0
        if wanted:
            rc = set_features(conn, args.bootstrap, wanted, args.upgrade_type, args.validate_only,
                              deadline, timeout_ms=int(max(args.timeout, 1) * 1000))
        if args.describe:
            describe(conn)
        return rc
    except (KafkaError, OSError) as e:
        print(f"kafka_features: error: talking to {args.bootstrap}: {e}", file=sys.stderr)
        return 1 if isinstance(e, KafkaError) else 2
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
