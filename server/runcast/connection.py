"""One WebSocket client: authentication, commands, and the ordered, bounded stream of frames it receives."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect

from . import __version__, auth, feed
from . import metrics as prom
from .auth import Authenticator, Identity
from .fanout import Batch
from .presence import entry_of
from .protocol import (
    Ack,
    Cancel,
    CloseCode,
    Comment,
    Decide,
    DeleteComment,
    EditComment,
    Encoding,
    ErrorCode,
    Event,
    Hello,
    People,
    Ping,
    Pong,
    ProtocolError,
    Rerun,
    ResolveThread,
    Say,
    Start,
    Subscribe,
    SubscribeInbox,
    SubscribeRuns,
    Sync,
    Typing,
    Unsubscribe,
    UnsubscribeFeed,
    User,
    Welcome,
    Withdraw,
    batch_payloads,
    control,
    decode_frame,
    encode,
    error_frame,
    now_iso,
    parse_command,
)
from .replay import Cursor
from .wire import ASGI_SEND_KEY, AsgiWire, SocketWire, attach, frames

if TYPE_CHECKING:
    from .backends.base import Backend
    from .fanout import Fanout
    from .feed import Feeds
    from .metrics import Metrics
    from .presence_feed import PresenceFeed
    from .service import Service
    from .settings import Settings

log = logging.getLogger("runcast.ws")
READ_PAGE = 1000
SLOW_GRACE_S = 1.0  # how long a client may hold more than max_send_bytes before it is closed with 4408
# A client over the limit that still took at least max_send_bytes during the grace reads promptly and is only behind
# a burst: it keeps its connection (checked again a grace later). Past this many times the limit, it is closed anyway:
# what the hub holds for one client stays bounded.
PROMPT_CEILING = 64
REPLAY_CHUNK_BYTES = 64 * 1024  # a replay is written this much at a time, whenever the client has room for it
# Every Connection object still in memory (weakly held): the debug endpoint reports it after gc, so a test can check
# that no Connection outlives its socket.
LIVE: weakref.WeakSet[Connection] = weakref.WeakSet()
# Frames refused before hello (a client's first frame should be its hello): past this many, close 1008.
PRE_AUTH_MAX_REFUSALS = 5


class Limiter:
    """Token bucket for commands, and a count of recent refusals (bad frames, rate limits) that ends in close 1008."""

    def __init__(self, rate: float, burst: float, strikes: int, window_s: float = 10.0) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, burst, 0.0
        self.max_strikes, self.window_s = strikes, window_s
        self._strikes: deque[float] | None = None  # made at the first strike (a deque is ~0.7 KiB per connection)

    def allow(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate) if self.stamp else self.tokens
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def strike(self, now: float) -> bool:
        """Count a refusal; True when the connection has broken limits too often and must close."""
        if self._strikes is None:
            self._strikes = deque()
        self._strikes.append(now)
        while self._strikes and self._strikes[0] < now - self.window_s:
            self._strikes.popleft()
        return len(self._strikes) > self.max_strikes


def log_reset(run_id: str, epoch: str | None, what: str) -> ProtocolError:
    return ProtocolError(
        ErrorCode.LOG_RESET,
        f"run {run_id} {what}: the history you hold was lost; start it afresh (subscribe without since)",
        run_id=run_id,
        epoch=epoch,
    )


class _Close:
    def __init__(self, code: int, reason: str) -> None:
        self.code, self.reason = code, reason


SLOW_REASON = "slow consumer: reconnect and subscribe with since"


class Host(Protocol):
    """What a connection uses from the hub node that holds it (hub.Hub is the one host). A protocol, so that a
    connection knows its host's shape without importing the hub above it (docs/architecture.md, the layers)."""

    @property
    def backend(self) -> Backend: ...
    @property
    def settings(self) -> Settings: ...
    @property
    def auth(self) -> Authenticator: ...
    @property
    def service(self) -> Service: ...
    @property
    def fanout(self) -> Fanout: ...
    @property
    def presence(self) -> PresenceFeed: ...
    @property
    def feeds(self) -> Feeds: ...
    @property
    def metrics(self) -> Metrics: ...

    async def authenticate_hello(self, conn: Connection, token: str | None) -> Identity:
        """Who a hello says it is (its token, or the session cookie the WebSocket was opened with)."""
        ...

    def authenticated(self, conn: Connection) -> None:
        """The connection's hello succeeded: it no longer counts as waiting for one."""
        ...

    def unexpected(self, exc: BaseException, what: str) -> ProtocolError:
        """An error that is not the client's, as the error frame it gets."""
        ...

    async def subscribe_runs(
        self, conn: Connection, limit: int, request_id: str | None, filters: dict[str, str] | None = None
    ) -> None:
        """The run list: a snapshot, then live `run.status` frames."""
        ...


class Connection:
    def __init__(self, hub: Host, ws: WebSocket, encoding: Encoding) -> None:
        self.hub = hub
        self.ws = ws
        self.encoding: Encoding = encoding
        self.id = f"c_{secrets.token_hex(6)}"
        self.identity: auth.Identity | None = None
        self.cursors: dict[str, Cursor[Event]] = {}
        self.joined: set[str] = set()  # runs where this connection is in the presence set
        self._talks: set[str] | None = None  # runs this connection may talk on (checked at its first `typing` there)
        self.batch = False  # the client asked for batched frames in its hello
        self.address = ""  # the client's address (hub.client_address), for the per-address pre-hello share
        self._binary = encoding == "msgpack"
        # Frames go straight to the socket when the server is uvicorn's websockets-sansio (see wire.py).
        self._wire: SocketWire | AsgiWire = attach(ws.scope.get(ASGI_SEND_KEY)) or AsgiWire(ws.send)
        self._fills: dict[str, asyncio.Task[Any]] = {}
        self._closing: _Close | None = None
        self._slow_timer: asyncio.TimerHandle | None = None
        self._slow_mark = (0, 0)  # (bytes written, bytes not taken, kernel's included) when the slow timer was armed
        self._batches = 0  # live batches seen: one in prom.DELIVERY_SAMPLE is timed when written
        self._expiry: asyncio.TimerHandle | None = None  # closes the connection when its token expires
        self._pre_auth_refusals = 0
        self._commands: deque[Any] | None = None  # commands taken off the socket, not yet run (made at the first)
        self._worker: asyncio.Task[None] | None = None
        s = hub.settings
        self.limiter = Limiter(s.rate_per_s, s.rate_burst, s.max_strikes)
        LIVE.add(self)

    # ------------------------------------------------------------------ sending
    # Everything a client gets is written at once, in order, to its socket (no task, no queue of ours). What it has
    # not taken yet is counted in bytes (`held`). A client that holds more than `max_send_bytes` for SLOW_GRACE_S is
    # closed with 4408: a slow consumer must not hold memory or hold anyone up; it comes back with `since`. (The grace
    # lets a fast client take one event bigger than the limit.) Replays, which can wait, wait for room instead.

    def _write(self, payloads: list[bytes], data: bytes | None = None) -> None:
        if self._closing is not None:
            return
        wire = self._wire
        if data is None:
            data = frames(payloads, self._binary) if wire.direct else b""
        wire.write(data, payloads, self._binary)
        self.hub.metrics.frames_out += len(payloads)
        if self._slow_timer is None and wire.held() > self.hub.settings.max_send_bytes:
            self._arm_slow()

    def _arm_slow(self) -> None:
        self._slow_mark = (self._wire.written, self._wire.untaken())
        self._slow_timer = asyncio.get_running_loop().call_later(SLOW_GRACE_S, self._still_over)

    def queued(self) -> int:
        """Bytes sent to this client and not yet taken by it (read by /metrics at scrape time)."""
        return self._wire.held()

    def _still_over(self) -> None:
        """SLOW_GRACE_S after this client went over the limit: closed if it still holds more than the limit and read
        less than the limit meanwhile (a prompt reader behind a burst is checked again, up to PROMPT_CEILING)."""
        self._slow_timer = None
        held, limit = self._wire.held(), self.hub.settings.max_send_bytes
        if held <= limit or self._closing is not None:
            return
        # What the client read during the grace: what was written meanwhile, less the growth of what it has not taken,
        # the kernel's send queue included (a client reading promptly from a full kernel queue drains that first: the
        # hub's own buffer may not move for a while).
        written0, untaken0 = self._slow_mark
        taken = (self._wire.written - written0) - (self._wire.untaken() - untaken0)
        if taken >= limit and held <= limit * PROMPT_CEILING:
            self._arm_slow()  # reading promptly, behind a burst: not a slow consumer
            return
        self.close(
            CloseCode.SLOW_CONSUMER,
            f"slow consumer: {held} bytes unread (limit {limit}); reconnect and subscribe with since",
        )

    def send(self, item: Event | str | bytes) -> None:
        if isinstance(item, Event):
            self._write([item.payload(self.encoding)])
        else:
            self._write([item.encode() if isinstance(item, str) else item])

    def send_events(self, events: list[Event]) -> None:
        """Several events at once: one write, and with batching on, as few frames as BATCH_MAX_BYTES allows."""
        if events:
            enc = self.encoding
            self._write(batch_payloads(events, enc) if self.batch else [ev.payload(enc) for ev in events])

    async def send_replay(self, events: list[Event]) -> None:
        """For replays: written REPLAY_CHUNK_BYTES at a time, each once the client holds less than REPLAY_HIGH_WATER
        (only live events can't wait: a replay never counts against the slow-consumer limit)."""
        enc = self.encoding
        start, size = 0, 0
        for i, ev in enumerate(events):
            size += len(ev.payload(enc))
            if size >= REPLAY_CHUNK_BYTES or i == len(events) - 1:
                await self._wire.room()
                if self._closing is not None:
                    return
                self.send_events(events[start : i + 1])
                start, size = i + 1, 0

    def send_shared(self, items: list[Any]) -> None:
        """Feed frames (feed.Shared): encoded and framed once for everyone who gets them; one write here."""
        enc = self.encoding
        done = [s.get(enc) for s in items]
        self._write([p for p, _ in done], b"".join(f for _, f in done) if self._wire.direct else b"")

    def send_control(self, frame: Any) -> None:
        self.send(control(frame, self.encoding) if hasattr(frame, "model_dump") else encode(frame, self.encoding))

    def send_error(self, err: ProtocolError, run_id: str | None = None) -> None:
        self.hub.metrics.errors[err.code] = self.hub.metrics.errors.get(err.code, 0) + 1
        self.send(encode(error_frame(err, run_id), self.encoding))

    def close(self, code: int, reason: str) -> None:
        """Close after what was sent (so a client sees the errors that led to a 1008). A slow consumer's close is
        written behind what its socket holds; it is cut off if it has not read it all within a few seconds."""
        if self._closing is not None:
            return
        log.debug("closing %s: %s %s (holding %d bytes)", self.id, code, reason, self._wire.held())
        self._closing = _Close(code, reason)
        if code == CloseCode.SLOW_CONSUMER:
            self.hub.metrics.slow_consumers += 1
        self._wire.close_now(code, reason[:120], drop=code == CloseCode.SLOW_CONSUMER)

    # ------------------------------------------------------------------ live events
    def on_live(self, run_id: str, events: list[Event]) -> None:
        cursor = self.cursors.get(run_id)
        if cursor is None or self._closing is not None:
            return
        batch = events if isinstance(events, Batch) else Batch(events)
        self._batches += 1
        if batch.contiguous and cursor.follows(batch.first, batch.last):
            # The fast path: these events simply continue what this client has, framed once for every client.
            data, payloads = batch.framed(self.encoding, self.batch)
            self._write(payloads, data)
            if not self._batches & (prom.DELIVERY_SAMPLE - 1):
                prom.observe_delivery(batch[-1], self.encoding)  # written (to the socket or its buffer) just now
            return
        out: list[Event] = []
        for ev in events:
            out += cursor.live(ev)
        self.send_events(out)
        if out and not self._batches & (prom.DELIVERY_SAMPLE - 1):
            prom.observe_delivery(out[-1], self.encoding)
        if cursor.overflow:
            self.close(CloseCode.SLOW_CONSUMER, SLOW_REASON)
        elif cursor.gap() is not None and run_id not in self._fills:
            self._fills[run_id] = asyncio.create_task(self._fill(run_id, cursor))

    async def _fill(self, run_id: str, cursor: Cursor[Event]) -> None:
        """A hole in the live feed (a missed publish): read it from the log."""
        try:
            while (gap := cursor.gap()) is not None and self.cursors.get(run_id) is cursor:
                events = await self.hub.backend.read(run_id, gap[0], gap[1])
                if not events:
                    break
                self.send_events(cursor.history(events))
        except ProtocolError as err:
            self.send_error(err, run_id)
        except Exception as exc:
            log.warning("gap fill for %s failed: %s", run_id, exc)
        finally:
            self._fills.pop(run_id, None)

    # ------------------------------------------------------------------ the session
    async def run(self) -> None:
        try:
            if await self._authenticate():
                await self._read_loop()
        except WebSocketDisconnect:
            pass
        finally:
            await self._cleanup()

    async def _receive(self) -> str | bytes | None:
        msg = await self.ws.receive()
        if msg["type"] == "websocket.disconnect":
            return None
        return msg.get("text") if msg.get("text") is not None else msg.get("bytes")

    async def _authenticate(self) -> bool:
        deadline = time.monotonic() + self.hub.settings.hello_timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close(CloseCode.UNAUTHENTICATED, "no valid hello in time")
                return False
            try:
                payload = await asyncio.wait_for(self._receive(), left)
            except TimeoutError:
                self.close(CloseCode.UNAUTHENTICATED, "no valid hello in time")
                return False
            if payload is None:
                return False
            self.hub.metrics.frames_in += 1
            try:
                cmd = parse_command(decode_frame(payload, self.encoding))
                if not isinstance(cmd, Hello):
                    raise ProtocolError(ErrorCode.UNAUTHENTICATED, "send hello with a token first", id=cmd.id)
            except ProtocolError as err:
                self.send_error(err)
                self._pre_auth_refusals += 1
                if self._pre_auth_refusals > PRE_AUTH_MAX_REFUSALS or self.limiter.strike(time.monotonic()):
                    self.close(CloseCode.POLICY, "too many frames before hello")
                    return False
                continue
            try:
                self.identity = await self.hub.authenticate_hello(self, cmd.token)
            except ProtocolError as err:
                err.detail["id"] = cmd.id
                self.send_error(err)
                self.close(CloseCode.UNAUTHENTICATED, err.message)
                return False
            transport = self.ws.scope.get("extensions", {}).get("runcast.transport")
            if transport is not None:  # lift the small pre-auth message limit (transport.py)
                transport["authenticated"]()
            self.hub.authenticated(self)
            self.batch = cmd.batch
            self._welcome(None)
            return True

    def _welcome(self, request_id: str | None) -> None:
        who = self.identity
        assert who is not None
        self.send_control(
            Welcome(
                connection_id=self.id,
                user=User.model_validate(who.public()),
                server=f"runcast/{__version__}",
                heartbeat_s=self.hub.settings.heartbeat_s,
                batch=True if self.batch else None,
                expires_at=who.exp,
                id=request_id,
                now=now_iso(),
            )
        )
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if who.exp is not None:  # cancelled in _cleanup: the handle holds this connection until it fires
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_at(
                loop.time() + max(0.0, who.exp - time.time()), self.close, CloseCode.UNAUTHENTICATED, "token expired"
            )

    async def _renew(self, cmd: Hello) -> None:
        """A hello on an open connection: a new token (or session) for the same person, before the old one ends. The
        connection and every subscription stay; a token for someone else is refused and changes nothing."""
        assert self.identity is not None
        if not cmd.token:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                "a renewing hello needs a token (the cookie is read only when the WebSocket opens)",
                id=cmd.id,
            )
        who = await self.hub.auth.verify(cmd.token)
        if who.sub != self.identity.sub:
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                "a renewing hello must be for the same person; open a new connection to change who you are",
                id=cmd.id,
            )
        if feed.scope(who) == feed.scope(self.identity):
            self.identity = who
            self._talks = None  # (the new token's roles may differ)
            self._welcome(cmd.id)
            return
        # The new token sees other runs or has other roles: what this connection watches is checked again. Each run
        # is read before anything changes (a failed read fails the renewal, which then changes nothing).
        lost = []
        for run_id in list(self.cursors):
            try:
                await self.hub.service.record(who, run_id)
            except ProtocolError:
                lost.append(run_id)
        inbox, run_list = self.hub.feeds.detach(self)  # (under the old identity: the feeds' classes are keyed by it)
        self.identity = who
        self._talks = None
        self._welcome(cmd.id)
        for run_id in lost:
            await self._unsubscribe(run_id)
            self.send_error(
                ProtocolError(
                    ErrorCode.FORBIDDEN,
                    f"your renewed token may not watch {run_id}: its events stop here (subscribe again with a token "
                    "that covers it)",
                ),
                run_id,
            )
        # the inbox and the run list start again from a snapshot of what the new token may see
        if inbox:
            self.hub.feeds.add_inbox(self)
        if run_list is not None:
            try:
                await self.hub.subscribe_runs(self, run_list[0], None, run_list[1])
            except Exception as exc:  # the backend: the client reconnects and subscribes again
                log.warning("reloading a run list after a renewed token failed: %s", exc)
                self.close(CloseCode.RESTARTING, "the run list could not be reloaded; reconnect")

    async def _read_loop(self) -> None:
        """Take every frame off the socket as soon as it arrives (uvicorn reads a connection's next frame only once
        the app took the last one: a client's pong must never wait behind its commands). Pings are answered here;
        commands go to this connection's queue, run one at a time, in order, by `_run_commands`. The queue is bounded
        (`rate_burst` commands) and rate-limited as ever: a client past either gets `rate_limited` at once."""
        try:
            while self._closing is None:
                payload = await self._receive()
                if payload is None:
                    return
                self.hub.metrics.frames_in += 1
                now = time.monotonic()
                cmd_id: str | None = None
                try:
                    allowed = self.limiter.allow(now)
                    cmd = parse_command(decode_frame(payload, self.encoding))
                    cmd_id = cmd.id
                    if not allowed:
                        raise ProtocolError(
                            ErrorCode.RATE_LIMITED,
                            f"over {self.hub.settings.rate_per_s:g} commands a second; slow down",
                        )
                    if isinstance(cmd, Ping):
                        self.send_control(Pong(id=cmd.id))
                        continue
                    if self._commands is None:
                        self._commands = deque()
                    elif len(self._commands) >= max(1, int(self.hub.settings.rate_burst)):
                        raise ProtocolError(
                            ErrorCode.RATE_LIMITED,
                            f"{len(self._commands)} commands are waiting for "
                            "their answers; wait for some before sending more",
                        )
                    self._commands.append(cmd)
                    if self._worker is None:
                        self._worker = asyncio.create_task(self._run_commands())
                except ProtocolError as err:
                    self._refused(err, cmd_id, now)
        finally:
            if self._commands:
                self._commands.clear()  # the client is gone: what it queued is not started (the one running finishes)
            if self._worker is not None:
                await asyncio.gather(self._worker, return_exceptions=True)

    def _refused(self, err: ProtocolError, cmd_id: str | None, now: float) -> None:
        if cmd_id is not None:
            err.detail.setdefault("id", cmd_id)
        self.send_error(err)
        if err.code in (
            ErrorCode.BAD_FRAME,
            ErrorCode.BAD_REQUEST,
            ErrorCode.UNKNOWN_TYPE,
            ErrorCode.RATE_LIMITED,
            ErrorCode.TOO_LARGE,
        ) and self.limiter.strike(now):
            self.close(CloseCode.POLICY, "too many bad or rate-limited frames")

    async def _run_commands(self) -> None:
        """This connection's commands, one at a time in the order they came (started when some wait; ends when none
        do, so an idle connection holds no task)."""
        try:
            while self._commands and self._closing is None:
                cmd = self._commands.popleft()
                try:
                    await self._dispatch(cmd)
                except ProtocolError as err:
                    self._refused(err, cmd.id, time.monotonic())
                except Exception as exc:
                    failure = self.hub.unexpected(exc, f"command {cmd.id or ''} on {self.id}")
                    if cmd.id is not None:
                        failure.detail["id"] = cmd.id
                    self.send_error(failure)
        finally:
            self._worker = None

    async def _dispatch(self, cmd: Any) -> None:
        who, svc = self.identity, self.hub.service
        assert who is not None
        if isinstance(cmd, Ping):
            self.send_control(Pong(id=cmd.id))
        elif isinstance(cmd, Subscribe):
            await self._subscribe(cmd)
        elif isinstance(cmd, Unsubscribe):
            await self._unsubscribe(cmd.run_id)
            self.send_control(Ack.model_validate({"id": cmd.id, "run_id": cmd.run_id}))
        elif isinstance(cmd, Decide):
            result = await svc.decide(
                who, cmd.run_id, cmd.approval_id, cmd.decision, cmd.reason, cmd.always, cmd.arguments
            )
            self.send_control(Ack.model_validate({"id": cmd.id, "run_id": cmd.run_id, **result}))
        elif isinstance(cmd, Cancel):
            result = await svc.cancel(who, cmd.run_id, cmd.mode)
            self.send_control(Ack(id=cmd.id, **result))
        elif isinstance(cmd, Start):
            result = await svc.start(who, cmd.agent, cmd.input, cmd.reviewers)
            self.send_control(Ack(id=cmd.id, **result))
        elif isinstance(cmd, Comment):
            result = await svc.comment(who, cmd.run_id, cmd.text, cmd.approval_id, cmd.reply_to)
            self.send_control(Ack(id=cmd.id, **result))
        elif isinstance(cmd, EditComment):
            result = await svc.edit_comment(who, cmd.run_id, cmd.comment_id, cmd.text)
            self.send_control(Ack(id=cmd.id, **result))
        elif isinstance(cmd, DeleteComment):
            result = await svc.delete_comment(who, cmd.run_id, cmd.comment_id)
            self.send_control(Ack(id=cmd.id, **result))
        elif isinstance(cmd, ResolveThread):
            result = await svc.resolve_thread(who, cmd.run_id, cmd.thread_id, cmd.resolved)
            self.send_control(Ack(id=cmd.id, **result))
        elif isinstance(cmd, People):
            people = await svc.people(who, cmd.run_id)
            self.send_control(Ack.model_validate({"id": cmd.id, "run_id": cmd.run_id, "people": people}))
        elif isinstance(cmd, Say):
            said = await svc.say(who, cmd.run_id, cmd.text)
            self.hub.presence.said(cmd.run_id, who.sub)  # whoever speaks has stopped typing
            self.send_control(Ack(id=cmd.id, **said))
        elif isinstance(cmd, Typing):
            await self._typing(cmd)
        elif isinstance(cmd, Rerun):
            self.send_control(Ack(id=cmd.id, **await svc.rerun(who, cmd.run_id)))
        elif isinstance(cmd, Withdraw):
            self.send_control(Ack(id=cmd.id, **await svc.withdraw(who, cmd.run_id, cmd.message_id)))
        elif isinstance(cmd, SubscribeInbox):
            self.hub.feeds.add_inbox(self, cmd.id)
        elif isinstance(cmd, SubscribeRuns):
            await self.hub.subscribe_runs(self, cmd.limit, cmd.id, cmd.filters())
        elif isinstance(cmd, UnsubscribeFeed):
            feeds = self.hub.feeds
            (feeds.remove_inbox if cmd.type == "unsubscribe_inbox" else feeds.remove_runs)(self)
            self.send_control(Ack(id=cmd.id))
        elif isinstance(cmd, Hello):
            await self._renew(cmd)

    async def _subscribe(self, cmd: Subscribe) -> None:
        run_id = cmd.run_id
        assert self.identity is not None
        try:
            rec = await self.hub.service.record(self.identity, run_id)
        except ProtocolError as err:
            if err.code == ErrorCode.NOT_FOUND and cmd.epoch:
                raise log_reset(run_id, None, "is gone from the hub's store") from None
            raise
        backend = self.hub.backend
        since = cmd.since or 0
        if cmd.epoch is not None and cmd.epoch != (rec.epoch or None):
            raise log_reset(run_id, rec.epoch or None, f"has a new log (epoch {rec.epoch or 'none'}, not {cmd.epoch})")
        head = await backend.head(run_id)
        if since > head and cmd.epoch:
            raise log_reset(run_id, rec.epoch or None, f"has only {head} events, not the {since} you saw")
        if since > head:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                f"field 'since': {since} is past the newest event ({head}) of {run_id}",
                run_id=run_id,
                field="since",
                head_seq=head,
            )
        old = self.cursors.get(run_id)
        cursor = self.cursors[run_id] = Cursor[Event](since, self.hub.settings.max_queue)
        if old is None:
            await self.hub.fanout.join(run_id, self)
        try:
            after = since
            while True:
                page = await backend.read(run_id, after, limit=READ_PAGE)
                await self.send_replay(cursor.history(page))
                if len(page) < READ_PAGE:
                    break
                after = page[-1].seq
        except ProtocolError:
            if self.cursors.get(run_id) is cursor:
                del self.cursors[run_id]
                await self.hub.fanout.leave(run_id, self)
            raise
        self.send_events(cursor.end_replay())
        rec = await backend.get(run_id) or rec
        self.send_control(
            Sync(run_id=run_id, head_seq=cursor.last, status=rec.status, epoch=rec.epoch or None, now=now_iso())
        )
        if cursor.gap() is not None and run_id not in self._fills:
            self._fills[run_id] = asyncio.create_task(self._fill(run_id, cursor))
        if run_id not in self.joined:  # presence is live state, never in the log (presence_feed.py)
            self.joined.add(run_id)
            await self.hub.presence.join(run_id, self, self._presence())

    def _presence(self) -> dict[str, Any]:
        who = self.identity
        assert who is not None
        return entry_of(self.id, who.sub, who.name, who.roles)

    async def _typing(self, cmd: Typing) -> None:
        """This connection's person is typing to the run's agent, or stopped: their presence entry says so (never
        logged; presence_feed.py clears it after a while, when they say something, or when they leave)."""
        run_id = cmd.run_id
        assert self.identity is not None
        if run_id not in self.joined:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                f"field 'run_id': subscribe to {run_id} before saying you type on it",
                run_id=run_id,
                field="run_id",
            )
        if self._talks is None or run_id not in self._talks:  # (the record is read once per run, not per keystroke)
            await self.hub.service.need_talk(self.identity, run_id)
            if self._talks is None:
                self._talks = set()
            self._talks.add(run_id)
        if run_id in self.joined:  # (still: the check above awaited)
            self.hub.presence.set_typing(run_id, self, cmd.typing)
        self.send_control(Ack.model_validate({"id": cmd.id, "run_id": run_id, "typing": cmd.typing}))

    async def _unsubscribe(self, run_id: str) -> None:
        if self.cursors.pop(run_id, None) is not None:
            await self.hub.fanout.leave(run_id, self)
        task = self._fills.pop(run_id, None)
        if task:
            task.cancel()
        if run_id in self.joined:
            self.joined.discard(run_id)
            await self.hub.presence.leave(run_id, self)

    async def _cleanup(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self.hub.feeds.remove(self)
        for run_id in list(self.cursors):
            await self._unsubscribe(run_id)
        for t in self._fills.values():
            t.cancel()
        if self._slow_timer is not None:
            self._slow_timer.cancel()
        if isinstance(self._wire, AsgiWire):
            await self._wire.aclose()
