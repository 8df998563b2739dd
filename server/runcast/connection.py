"""One WebSocket client: authentication, commands, and the ordered, bounded stream of frames it receives."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from . import __version__, auth
from . import metrics as prom
from .protocol import (
    Ack,
    CloseCode,
    Decide,
    Encoding,
    ErrorCode,
    Event,
    Hello,
    Ping,
    Pong,
    ProtocolError,
    Start,
    Subscribe,
    SubscribeInbox,
    SubscribeRuns,
    Sync,
    Unsubscribe,
    UnsubscribeFeed,
    Cancel,
    Welcome,
    control,
    decode_frame,
    encode,
    error_frame,
    parse_command,
)
from .replay import Cursor

if TYPE_CHECKING:
    from .hub import Hub

log = logging.getLogger("runcast.ws")
READ_PAGE = 1000


class Limiter:
    """Token bucket for commands, and a count of recent refusals (bad frames, rate limits) that ends in close 1008."""

    def __init__(self, rate: float, burst: float, strikes: int, window_s: float = 10.0) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, burst, 0.0
        self.max_strikes, self.window_s = strikes, window_s
        self._strikes: deque[float] = deque()

    def allow(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate) if self.stamp else self.tokens
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def strike(self, now: float) -> bool:
        """Count a refusal; True when the connection has broken limits too often and must close."""
        self._strikes.append(now)
        while self._strikes and self._strikes[0] < now - self.window_s:
            self._strikes.popleft()
        return len(self._strikes) > self.max_strikes


class _Close:
    def __init__(self, code: int, reason: str) -> None:
        self.code, self.reason = code, reason


class Connection:
    def __init__(self, hub: "Hub", ws: WebSocket, encoding: Encoding) -> None:
        self.hub = hub
        self.ws = ws
        self.encoding: Encoding = encoding
        self.id = f"c_{secrets.token_hex(6)}"
        self.identity: auth.Identity | None = None
        self.cursors: dict[str, Cursor] = {}
        self.joined: set[str] = set()  # runs where this connection announced participant.joined
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._room = asyncio.Event()  # set while the queue is under half full: replays wait on it
        self._room.set()
        self._fills: dict[str, asyncio.Task[Any]] = {}
        self._closing: _Close | None = None
        self._writer: asyncio.Task[Any] | None = None
        self._batches = 0  # live batches seen: one in prom.DELIVERY_SAMPLE is timed (`_probe`, when written)
        self._probe: Event | None = None
        s = hub.settings
        self.limiter = Limiter(s.rate_per_s, s.rate_burst, s.max_strikes)

    # ------------------------------------------------------------------ sending
    def send(self, item: Event | str | bytes) -> None:
        if self._closing is not None:
            return
        if self._queue.qsize() >= self.hub.settings.max_queue:
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer: reconnect and subscribe with since")
            return
        self._queue.put_nowait(item)

    def queued(self) -> int:
        """Frames waiting to be written (read by /metrics at scrape time)."""
        return self._queue.qsize()

    async def send_paced(self, item: Event) -> None:
        """For replays: wait for room instead of counting the burst against the client (only live events can't wait)."""
        if self._queue.qsize() >= self.hub.settings.max_queue // 2:
            self._room.clear()
            await self._room.wait()
        self.send(item)  # dropped if the connection closed meanwhile

    def send_control(self, frame: Any) -> None:
        self.send(control(frame, self.encoding) if hasattr(frame, "model_dump") else encode(frame, self.encoding))

    def send_error(self, err: ProtocolError, run_id: str | None = None) -> None:
        self.hub.metrics.errors[err.code] = self.hub.metrics.errors.get(err.code, 0) + 1
        self.send(encode(error_frame(err, run_id), self.encoding))

    def close(self, code: int, reason: str) -> None:
        """Close after what is queued (so a client sees the errors that led to a 1008), except for a slow consumer:
        its queue is dropped at once, since it must not hold memory."""
        if self._closing is not None:
            return
        log.debug("closing %s: %s %s (queued %d)", self.id, code, reason, self._queue.qsize())
        self._closing = _Close(code, reason)
        if code == CloseCode.SLOW_CONSUMER:
            self.hub.metrics.slow_consumers += 1
            while not self._queue.empty():
                self._queue.get_nowait()
        self._queue.put_nowait(self._closing)
        self._room.set()

    async def _write(self) -> None:
        ws, metrics = self.ws, self.hub.metrics
        try:
            while True:
                item = await self._queue.get()
                if not self._room.is_set() and self._queue.qsize() < self.hub.settings.max_queue // 2:
                    self._room.set()
                if isinstance(item, _Close):
                    try:
                        await ws.close(item.code, item.reason[:120])
                    except Exception:  # noqa: BLE001 - already gone
                        pass
                    return
                data = item.encode(self.encoding) if isinstance(item, Event) else item
                if isinstance(data, bytes):
                    await ws.send_bytes(data)
                else:
                    await ws.send_text(data)
                metrics.frames_out += 1
                if item is self._probe:
                    prom.observe_delivery(item, self.encoding)
                    self._probe = None
        except Exception as exc:  # noqa: BLE001 - the socket went away under us: stop queueing for it
            log.debug("writer of %s stopped: %r", self.id, exc)
            if self._closing is None:
                self._closing = _Close(1006, "gone")
        finally:
            self._room.set()

    # ------------------------------------------------------------------ live events
    def on_live(self, run_id: str, events: list[Event]) -> None:
        cursor = self.cursors.get(run_id)
        if cursor is None:
            return
        for ev in events:
            for out in cursor.live(ev):
                self.send(out)
        self._batches += 1
        if not self._batches & (prom.DELIVERY_SAMPLE - 1):
            self._probe = events[-1]
        if cursor.overflow:
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer: reconnect and subscribe with since")
        elif cursor.gap() is not None and run_id not in self._fills:
            self._fills[run_id] = asyncio.create_task(self._fill(run_id, cursor))

    async def _fill(self, run_id: str, cursor: Cursor) -> None:
        """A hole in the live feed (a missed publish): read it from the log."""
        try:
            while (gap := cursor.gap()) is not None and self.cursors.get(run_id) is cursor:
                events = await self.hub.backend.read(run_id, gap[0], gap[1])
                if not events:
                    break
                for ev in cursor.history(events):
                    self.send(ev)
        except ProtocolError as err:
            self.send_error(err, run_id)
        except Exception as exc:  # noqa: BLE001
            log.warning("gap fill for %s failed: %s", run_id, exc)
        finally:
            self._fills.pop(run_id, None)

    # ------------------------------------------------------------------ the session
    async def run(self) -> None:
        self._writer = asyncio.create_task(self._write())
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
            except asyncio.TimeoutError:
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
                if self.limiter.strike(time.monotonic()):
                    self.close(CloseCode.POLICY, "too many bad frames")
                    return False
                continue
            try:
                self.identity = auth.verify(self.hub.settings.secret, cmd.token, require_exp=not self.hub.settings.dev)
            except ProtocolError as err:
                err.detail["id"] = cmd.id
                self.send_error(err)
                self.close(CloseCode.UNAUTHENTICATED, err.message)
                return False
            who = self.identity
            self.send_control(Welcome(connection_id=self.id, user=who.public(), server=f"runcast/{__version__}",
                                      heartbeat_s=self.hub.settings.heartbeat_s))
            if who.exp is not None:
                asyncio.get_running_loop().call_at(
                    asyncio.get_running_loop().time() + max(0.0, who.exp - time.time()),
                    self.close, CloseCode.UNAUTHENTICATED, "token expired",
                )
            return True

    async def _read_loop(self) -> None:
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
                    raise ProtocolError(ErrorCode.RATE_LIMITED, f"over {self.hub.settings.rate_per_s:g} commands a second; slow down")
                await self._dispatch(cmd)
            except ProtocolError as err:
                if cmd_id is not None:
                    err.detail.setdefault("id", cmd_id)
                self.send_error(err)
                if err.code in (ErrorCode.BAD_FRAME, ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_TYPE,
                                ErrorCode.RATE_LIMITED, ErrorCode.TOO_LARGE) and self.limiter.strike(now):
                    self.close(CloseCode.POLICY, "too many bad or rate-limited frames")
            except Exception as exc:  # noqa: BLE001 - a bug or an outage must not take the connection down
                err = self.hub.unexpected(exc, f"command {cmd_id or ''} on {self.id}")
                if cmd_id is not None:
                    err.detail["id"] = cmd_id
                self.send_error(err)

    async def _dispatch(self, cmd: Any) -> None:
        who, svc = self.identity, self.hub.service
        assert who is not None
        if isinstance(cmd, Ping):
            self.send_control(Pong(id=cmd.id))
        elif isinstance(cmd, Subscribe):
            await self._subscribe(cmd)
        elif isinstance(cmd, Unsubscribe):
            await self._unsubscribe(cmd.run_id)
            self.send_control(Ack(id=cmd.id, run_id=cmd.run_id))
        elif isinstance(cmd, Decide):
            result = await svc.decide(who, cmd.run_id, cmd.approval_id, cmd.decision, cmd.reason, cmd.always)
            self.send_control(Ack(id=cmd.id, run_id=cmd.run_id, **result))
        elif isinstance(cmd, Cancel):
            result = await svc.cancel(who, cmd.run_id, cmd.mode)
            self.send_control(Ack(id=cmd.id, **result))
        elif isinstance(cmd, Start):
            result = await svc.start(who, cmd.agent, cmd.input)
            self.send_control(Ack(id=cmd.id, **result))
        elif isinstance(cmd, SubscribeInbox):
            self.hub.feeds.add_inbox(self, cmd.id)
        elif isinstance(cmd, SubscribeRuns):
            await self.hub.subscribe_runs(self, cmd.limit, cmd.id)
        elif isinstance(cmd, UnsubscribeFeed):
            feeds = self.hub.feeds
            (feeds.remove_inbox if cmd.type == "unsubscribe_inbox" else feeds.remove_runs)(self)
            self.send_control(Ack(id=cmd.id))
        elif isinstance(cmd, Hello):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "already authenticated; hello is only the first frame", id=cmd.id)

    async def _subscribe(self, cmd: Subscribe) -> None:
        run_id = cmd.run_id
        assert self.identity is not None
        rec = await self.hub.service.record(self.identity, run_id)
        backend = self.hub.backend
        since = cmd.since or 0
        head = await backend.head(run_id)
        if since > head:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"field 'since': {since} is past the newest event ({head}) of {run_id}",
                                run_id=run_id, field="since", head_seq=head)
        old = self.cursors.get(run_id)
        cursor = self.cursors[run_id] = Cursor(since, self.hub.settings.max_queue)
        if old is None:
            await self.hub.fanout.join(run_id, self)
        try:
            after = since
            while True:
                page = await backend.read(run_id, after, limit=READ_PAGE)
                for ev in cursor.history(page):
                    await self.send_paced(ev)
                if len(page) < READ_PAGE:
                    break
                after = page[-1].seq
        except ProtocolError:
            if self.cursors.get(run_id) is cursor:
                del self.cursors[run_id]
                await self.hub.fanout.leave(run_id, self)
            raise
        for ev in cursor.end_replay():
            self.send(ev)
        rec = await backend.get(run_id) or rec
        self.send_control(Sync(run_id=run_id, head_seq=cursor.last, status=rec.status))
        if cursor.gap() is not None and run_id not in self._fills:
            self._fills[run_id] = asyncio.create_task(self._fill(run_id, cursor))
        if run_id not in self.joined:
            self.joined.add(run_id)
            await backend.append(run_id, [("participant.joined", self._presence())])

    def _presence(self) -> dict[str, Any]:
        who = self.identity
        assert who is not None
        return {"sub": who.sub, "name": who.name, "roles": list(who.roles), "connection_id": self.id}

    async def _unsubscribe(self, run_id: str) -> None:
        if self.cursors.pop(run_id, None) is not None:
            await self.hub.fanout.leave(run_id, self)
        task = self._fills.pop(run_id, None)
        if task:
            task.cancel()
        if run_id in self.joined:
            self.joined.discard(run_id)
            try:
                await self.hub.backend.append(run_id, [("participant.left", self._presence())])
            except Exception as exc:  # noqa: BLE001 - presence is best effort when the backend is down
                log.warning("participant.left for %s not logged: %s", run_id, exc)

    async def _cleanup(self) -> None:
        self.hub.feeds.remove(self)
        for run_id in list(self.cursors):
            await self._unsubscribe(run_id)
        for t in self._fills.values():
            t.cancel()
        if self._writer is not None:
            if self._closing is not None and not self._writer.done():
                try:
                    await asyncio.wait_for(asyncio.shield(self._writer), 2)
                except (asyncio.TimeoutError, Exception):  # noqa: BLE001
                    pass
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
