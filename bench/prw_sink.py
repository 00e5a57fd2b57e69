"""A Prometheus remote-write sink for benchmarks: accepts every POST, counts bytes.

    python bench/prw_sink.py --port 9090 --stats /tmp/prw.json
"""

from __future__ import annotations

import argparse
import json

from aiohttp import web


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--stats", required=True)
    args = p.parse_args()
    stats = {"requests": 0, "bytes": 0, "latencies_ms": []}

    async def write(request: web.Request) -> web.Response:
        body = await request.read()
        stats["requests"] += 1
        stats["bytes"] += len(body)
        return web.Response(status=204)

    async def dump(_app) -> None:
        with open(args.stats, "w") as f:
            json.dump(stats, f)

    app = web.Application(client_max_size=256 << 20)
    app.router.add_post("/api/v1/write", write)
    app.on_shutdown.append(dump)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
