#!/usr/bin/env python3
"""A reference consumer of the portal's user events: keeps a copy of every user in its own
PostgreSQL database by the rules every consumer follows (docs/consumers.md): trust by AMQP
user_id, the envelope's major version, the version rule, one transaction per batch acked after
its commit, retries and dead letters with the portal's headers, the end-of-history mark of a
backfill, a portal.receipt after each committed batch, and erasure (nothing personal is kept of an
erased person, and nothing is applied over them again)."""
import argparse
import contextlib
import copy
import json
import logging
import os
import random
import re
import signal
import time
import uuid
from datetime import datetime, timezone

import pika
import psycopg

CONTROL_EXCHANGE = "portal.control"
RECEIPT_TYPE = "portal.receipt"
HISTORY_TYPE = "portal.history.complete"
RETRY_DELAYS = ["1s", "5s", "30s", "2m", "10m"]  # <queue>.retry.<delay>, shortest first
MAX_BYTES = 256 * 1024
EVENT_TYPES = {"user.created", "user.updated", "user.activated", "user.deactivated",
               "user.role.changed", "user.snapshot", "user.erased"}
ERASED_NAMES = ("Erased", "User")  # an erased person's first and last name (contract::erasure)
ROLES = {"admin", "doctor", "nurse", "pharmacist", "consultant"}
UUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
SETTINGS = """settings (environment):
  AMQP_URL            its own broker user, e.g. amqp://portal-pharmacy:PASSWORD@127.0.0.1:5672/%2f
  DATABASE_URL        its own database, e.g. postgresql://pharmacy@127.0.0.1:5432/pharmacy
  CONSUMER_NAME       its registered name (queue <name>.user-events), e.g. pharmacy
  TRUSTED_PUBLISHERS  whose messages it applies, and its own [default: portal-relay,portal-operator]
  CONSUMER_PREFETCH   messages delivered unacked, the largest batch [default: 100]
  LOG_LEVEL           DEBUG, INFO, WARNING [default: INFO]
`portal consumer add NAME --credentials-file FILE` writes AMQP_URL, CONSUMER_NAME, TRUSTED_PUBLISHERS."""
# The version rule: a change replaces the stored row only when its userVersion is greater
# ({newer} is ">"), a repair (user.snapshot) also when equal (">="), so a row altered behind the
# consumer's back at the same version is put right. A copy AHEAD of auth_db (forged, or auth_db
# restored from an older backup) needs nothing else here: its repair comes with a version one past
# the copy's (the auth-service's version fence), which this same rule applies.
# Nothing is applied over an erased row (u.erased_at IS NULL), whatever its type or version.
UPSERT = """INSERT INTO users AS u (id, email, first_name, last_name, role, phone_number,
    is_active, must_change_password, created_at, updated_at, user_version, event_timestamp, erased_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, first_name = EXCLUDED.first_name,
    last_name = EXCLUDED.last_name, role = EXCLUDED.role, phone_number = EXCLUDED.phone_number,
    is_active = EXCLUDED.is_active, must_change_password = EXCLUDED.must_change_password,
    created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,
    user_version = EXCLUDED.user_version, event_timestamp = EXCLUDED.event_timestamp,
    erased_at = EXCLUDED.erased_at, applied_at = now()
WHERE u.erased_at IS NULL
  AND ((EXCLUDED.user_version IS NOT NULL
        AND (u.user_version IS NULL OR EXCLUDED.user_version {newer} u.user_version))
    OR (EXCLUDED.user_version IS NULL AND u.user_version IS NULL
        AND EXCLUDED.event_timestamp > u.event_timestamp))"""
# The erasure rule, after UPSERT has applied an erasure like any change (creating the tombstone
# row if absent): a row it could not replace (its version as high or higher) still forgets the
# person now, keeping the greater version.
FORGET = """UPDATE users SET email = %s, first_name = %s, last_name = %s, phone_number = NULL,
    erased_at = %s, user_version = GREATEST(user_version, %s), applied_at = now()
WHERE id = %s AND erased_at IS NULL"""
log = logging.getLogger("consumer")


class Rejected(Exception):
    """A message that can never be applied: Rejected(x-error-reason, detail)."""


def stamp(t=None):
    """`t` (default: now) as the portal writes instants: 2026-02-07T10:00:00.000Z."""
    return (t or datetime.now(timezone.utc)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def instant(field, value):
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc)
    except (AttributeError, ValueError):
        raise Rejected("invalid-payload", f"invalid payload: {field} is not an ISO-8601 time")


def decode(body):
    """The envelope of `body`, checked as the portal's consumers check it; unknown fields ignored."""
    if len(body) > MAX_BYTES:
        raise Rejected("too-large", f"body is {len(body)} bytes, over the limit of {MAX_BYTES}")
    try:
        env = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise Rejected("not-utf8", f"body is not UTF-8: {e}")
    except ValueError as e:
        raise Rejected("not-json", f"body is not JSON: {e}")
    if not isinstance(env, dict):
        raise Rejected("invalid-payload", "body is not a JSON object")
    version, kind, p = env.get("version"), env.get("eventType"), env.get("payload")
    if isinstance(version, str) and version.split(".")[0] != "1":
        raise Rejected("unsupported-version",
                       f"unsupported version {version!r} (this reader understands 1.x)")
    if isinstance(kind, str) and kind not in EVENT_TYPES:
        raise Rejected("unknown-event-type", f"unknown eventType {kind!r}")

    def need(ok, what):
        if not ok:
            raise Rejected("invalid-payload", f"invalid payload: {what}")
    need(isinstance(version, str) and kind in EVENT_TYPES, "version and eventType are required")
    need(isinstance(p, dict), "payload is not an object")
    need(all(isinstance(i, str) and UUID.match(i) for i in (env.get("eventId"), p.get("userId"))),
         "eventId and payload.userId must be UUIDs")
    for field in ("email", "firstName", "lastName"):
        need(isinstance(p.get(field), str) and p[field].strip(), f"payload.{field} is missing")
    need(p.get("role") in ROLES, "payload.role is not a known role")
    need(isinstance(p.get("isActive"), bool), "payload.isActive is not a boolean")
    need(p.get("phoneNumber") is None or isinstance(p["phoneNumber"], str), "payload.phoneNumber")
    v = p.get("userVersion")
    need(v is None or (type(v) is int and v >= 1), "payload.userVersion must be 1 or more")
    need(kind != "user.erased" or p.get("erasedAt") is not None, "payload.erasedAt is required")
    env["at"] = instant("timestamp", env.get("timestamp"))
    instant("payload.createdAt", p.get("createdAt"))
    if p.get("erasedAt") is not None:
        env["erased"] = instant("payload.erasedAt", p["erasedAt"])
    return env


def newest_per_user(events):
    """The newest event of each user: an erasure beats everything, a versioned one an
    unversioned one, a higher version a lower, a repair a change at the same version; unversioned
    ones go by timestamp."""
    def newness(e):
        v = e["payload"].get("userVersion")
        return ("erased" in e, v is not None, v or 0, e["eventType"] == "user.snapshot", e["at"])
    newest = {}
    for e in events:
        kept = newest.get(e["payload"]["userId"])
        if kept is None or newness(e) > newness(kept):
            newest[e["payload"]["userId"]] = e
    return list(newest.values())


class Outage:
    """One warning when a dependency goes away and one line when it is back, not one per retry."""

    def __init__(self, what):
        self.what, self.since = what, None

    def failed(self, error):
        if self.since is None:
            self.since = time.monotonic()
            log.warning("%s unavailable: %s", self.what, error)

    def recovered(self):
        if self.since is not None:
            log.info("%s available again after %.1f s", self.what, time.monotonic() - self.since)
            self.since = None


class Consumer:
    def __init__(self, env):
        self.name = env["CONSUMER_NAME"]
        self.queue = f"{self.name}.user-events"
        self.set_aside = f"{self.queue}.set-aside"  # routes to its retry queues and its .dlq
        self.params = pika.URLParameters(env["AMQP_URL"])
        self.own_user = self.params.credentials.username
        trusted = env.get("TRUSTED_PUBLISHERS", "portal-relay,portal-operator").split(",")
        self.trusted = {u.strip() for u in trusted if u.strip()} | {self.own_user}
        self.database_url, self.prefetch = env["DATABASE_URL"], int(env.get("CONSUMER_PREFETCH", "100"))
        self.conn = self.db = None
        self.stopping = False
        self.broker, self.database = Outage("RabbitMQ"), Outage("database")

    def pause(self, seconds):
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            if self.conn is not None and self.conn.is_open:
                self.conn.sleep(0.1)  # keeps the connection's heartbeats going
            else:
                time.sleep(0.1)

    def run(self):
        delay = 0.1
        while not self.stopping:
            try:
                self.conn = pika.BlockingConnection(self.params)
                self.channel = self.conn.channel()
                self.channel.queue_declare(self.queue, passive=True)  # made by `portal consumer add`
                self.channel.basic_qos(prefetch_count=self.prefetch)
                self.copies = self.conn.channel()
                self.copies.confirm_delivery()  # a copy exists before its original is acked
                self.receipts = self.conn.channel()  # refused receipts never stop the copies
                self.delivered = []
                self.channel.basic_consume(  # deliveries wait in self.delivered for the next batch
                    self.queue, lambda _channel, *delivery: self.delivered.append(delivery))
                self.broker.recovered()
                log.info("consuming %s as %s (prefetch %d)", self.queue, self.own_user, self.prefetch)
                delay = 0.1
                while not self.stopping:
                    self.conn.process_data_events(time_limit=1)
                    batch, self.delivered = self.delivered, []
                    if batch and not self.handle(batch):
                        break
            except (pika.exceptions.AMQPError, OSError) as e:
                self.broker.failed(e)
                self.close()
                self.pause(delay + random.uniform(0, delay))
                delay = min(delay * 2, 10)
        self.close()
        log.info("consumer stopped")

    def close(self):  # what was not acked is delivered again
        if self.conn is not None and self.conn.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError):
                self.conn.close()

    def publisher_check(self, props):
        """Why it is not a trusted publisher's (None: it is); the first publisher counts too."""
        user, first = props.user_id, (props.headers or {}).get("x-original-user-id")
        if not user:
            return "published without a user_id: not a trusted publisher"
        if user not in self.trusted:
            return f"published by broker user {user!r}, not a trusted publisher"
        if first is not None and first not in self.trusted:
            return f"sent by {user!r} but first published by {first!r}, not a trusted publisher"
        return None

    def handle(self, batch):
        """Sets aside what can never be applied, applies the rest in one transaction, acks after
        the commit, then sends the receipt. False: stopped while the database was down."""
        events, mark, acked, receipts = [], None, set(), []
        for d in batch:
            method, props, body = d
            try:
                if why := self.publisher_check(props):
                    raise Rejected("untrusted-publisher", why)
                if props.type == HISTORY_TYPE:
                    try:
                        mark = int(json.loads(body)["users"])
                    except (ValueError, KeyError, TypeError) as e:
                        raise Rejected("invalid-payload", f"end-of-history mark with a bad body: {e!r}")
                    continue
                events.append((d, decode(body)))
            except Rejected as e:
                self.dead_letter(d, *e.args)
                self.channel.basic_ack(method.delivery_tag)
                acked.add(method.delivery_tag)
        outcome = self.apply_with_retry([e for _, e in events], mark, receipts)
        if outcome is None:
            return False
        if isinstance(outcome, psycopg.Error):  # the data's fault: find which event, one by one
            for d, event in events:
                outcome = self.apply_with_retry([event], None, receipts)
                if outcome is None:
                    return False
                if isinstance(outcome, psycopg.Error):
                    self.retry_later(d, outcome)
                    self.channel.basic_ack(d[0].delivery_tag)
                    acked.add(d[0].delivery_tag)
            if mark is not None and (outcome := self.apply_with_retry([], mark, receipts)) is not True:
                if outcome is None:
                    return False
                raise pika.exceptions.AMQPError(f"end-of-history mark not recorded: {outcome}")
        rest = [m.delivery_tag for m, _, _ in batch if m.delivery_tag not in acked]
        if rest:
            self.channel.basic_ack(rest[-1], multiple=True)
        self.send_receipt(receipts)
        return True

    def apply_with_retry(self, events, mark, receipts):
        """True once committed; the error when the database refused the data; None when stopped
        while it was unreachable (an outage spends no message's retry budget)."""
        events, delay = newest_per_user(events), 0.1
        while True:
            try:
                if self.db is None or self.db.closed:
                    self.db = psycopg.connect(self.database_url, autocommit=True)
                with self.db.transaction(), self.db.cursor() as cur:
                    for newer, repairs in ((">", False), (">=", True)):
                        part = [e for e in events if (e["eventType"] == "user.snapshot") == repairs]
                        if part:
                            cur.executemany(UPSERT.format(newer=newer), [row(e) for e in part])
                    erased = [row(e) for e in events if "erased" in e]
                    if erased:
                        cur.executemany(FORGET, [(*r[1:4], r[12], r[10], r[0]) for r in erased])
                    # What the copy holds now: an event refused over an erased row confirms nothing.
                    cur.execute("SELECT id::text, user_version FROM users WHERE id = ANY(%s::uuid[])",
                                ([e["payload"]["userId"] for e in events],))
                    held = {i.lower(): v for i, v in cur.fetchall()}
                    if mark is not None:
                        cur.execute("INSERT INTO history_complete (consumer, users) VALUES (%s, %s) "
                                    "ON CONFLICT (consumer) DO UPDATE SET users = EXCLUDED.users, "
                                    "marked_at = now()", (self.name, mark))
                self.database.recovered()
                if mark is not None:
                    log.info("end-of-history mark applied: %d users", mark)
                for e in events:  # applied, or older than the copy: it holds this version at least
                    v = e["payload"].get("userVersion")
                    if v and v <= (held.get(e["payload"]["userId"].lower()) or 0):
                        receipts.append({"userId": e["payload"]["userId"], "changedAt": stamp(e["at"]),
                                         "userVersion": e["payload"]["userVersion"]})
                return True
            except psycopg.OperationalError as e:
                self.database.failed(e)
                if self.db is not None:
                    self.db.close()
                if self.stopping:
                    return None
                self.pause(delay + random.uniform(0, delay))
                delay = min(delay * 2, 10)
            except psycopg.Error as e:
                self.database.recovered()
                return e

    def copy_to(self, d, queue, headers):
        """A persistent copy of delivery `d` to one of this consumer's queues, confirmed."""
        method, props, body = d
        props = copy.copy(props)
        props.headers = dict(props.headers or {})
        props.headers.setdefault("x-original-exchange", method.exchange)
        props.headers.setdefault("x-original-routing-key", method.routing_key)
        props.headers.setdefault("x-first-failure-time", stamp())
        recorded = props.headers.pop("x-original-user-id", None)  # believed from the trusted only
        first = (recorded if props.user_id in self.trusted else None) or props.user_id
        if first:
            props.headers["x-original-user-id"] = first
        props.headers.update(headers)
        props.delivery_mode, props.user_id = 2, self.own_user  # the broker allows no other
        self.copies.basic_publish(self.set_aside, queue, body, props, mandatory=True)

    def dead_letter(self, d, reason, detail):
        log.warning("dead-lettering message: %s: %s", reason, detail)
        self.copy_to(d, f"{self.queue}.dlq", {"x-error-reason": reason, "x-error-detail": detail,
                                              "x-consumer": self.name, "x-last-error": detail})

    def retry_later(self, d, error):
        attempts = int((d[1].headers or {}).get("x-retry-count", 0))
        if attempts >= len(RETRY_DELAYS):
            detail = f"failed {attempts + 1} times, last: {error}"
            return self.dead_letter(d, "retries-exhausted", detail)
        log.warning("event could not be applied (attempt %d), retrying in %s: %s",
                    attempts + 1, RETRY_DELAYS[attempts], error)
        self.copy_to(d, f"{self.queue}.retry.{RETRY_DELAYS[attempts]}",
                     {"x-last-error": str(error), "x-retry-count": attempts + 1})

    def send_receipt(self, users):
        """What the batch applied, without waiting: a lost one is made good by the next change."""
        if not users or self.receipts is None:
            return
        body = json.dumps({"consumer": self.name, "appliedAt": stamp(), "users": users}).encode()
        props = pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                     type=RECEIPT_TYPE, message_id=str(uuid.uuid4()),
                                     app_id=self.name, user_id=self.own_user)
        try:
            self.receipts.basic_publish(CONTROL_EXCHANGE, f"receipt.{self.name}", body, props)
        except pika.exceptions.AMQPChannelError as e:
            log.warning("cannot send receipts (%s); none are sent until the consumer reconnects", e)
            self.receipts = None


def row(e):
    """The users row an event writes; an erased person's with the placeholders, whatever the
    payload holds (contract::erasure: erased-<userId>@erased.invalid, Erased User, no phone)."""
    p, erased = e["payload"], e.get("erased")
    if erased:
        email, first, last, phone = f"erased-{p['userId'].lower()}@erased.invalid", *ERASED_NAMES, None
    else:
        email, first, last, phone = p["email"], p["firstName"], p["lastName"], p.get("phoneNumber")
    return (p["userId"], email, first, last, p["role"], phone, p["isActive"],
            bool(p.get("mustChangePassword", False)), p["createdAt"], p.get("updatedAt"),
            p.get("userVersion"), e["at"], erased)


def main():
    argparse.ArgumentParser(description=__doc__, epilog=SETTINGS,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    missing = [k for k in ("AMQP_URL", "DATABASE_URL", "CONSUMER_NAME") if not os.environ.get(k)]
    if missing:
        raise SystemExit(f"consumer.py: set {', '.join(missing)} (see --help)")
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pika").setLevel(logging.CRITICAL)  # its own lines would repeat ours
    consumer = Consumer(os.environ)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: setattr(consumer, "stopping", True))
    consumer.run()


if __name__ == "__main__":
    main()
