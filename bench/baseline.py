"""The baseline for bench/run.py: the thinnest fan-out on the same stack (Starlette on uvicorn).

Each client connects to /ws and sends any text; the server sends it every frame of FRAMES_FILE (one JSON text per
line, already encoded) and then "done". No auth, no log, no ordering: what a WebSocket broadcast costs on its own.
"""

import os
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

with open(os.environ["FRAMES_FILE"], encoding="utf-8") as f:
    FRAMES = [line.rstrip("\n") for line in f if line.strip()]


async def ws(socket: WebSocket) -> None:
    await socket.accept()
    await socket.receive_text()
    for frame in FRAMES:
        await socket.send_text(frame)
    await socket.send_text("done")
    await socket.receive_text()  # the client closes


app = Starlette(routes=[WebSocketRoute("/ws", ws)])

if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        ws="websockets-sansio",
        loop=os.environ.get("RUNCAST_LOOP", "auto"),
        ws_per_message_deflate=False,
    )
