"""Benchmark 11: streamed speech. How soon a four-sentence reply starts to sound, against how long it takes to say it all.

The `local` profile's Piper voice (en_US-joe-medium) behind `/v1/audio/speech`, served by uvicorn on a real socket in
this process; an httpx client reads the stream. Time to first byte (the first sentence's audio) against the time to
the last byte, for chunked pcm (Pipecat's way) and for `stream_format: sse` (LiveKit's), over the same runs.
"""
from __future__ import annotations
import time
from common import local_model, local_settings, median, paired_ratio, row

REPLY = ("The train leaves the station at nine in the morning. It stops twice before the border. "
         "Lunch is served in the dining car. We arrive in the city before dark.")


def timed(client, body: dict) -> tuple[float, float, int]:
    "Seconds to the first body bytes and to the last, and the bytes received."
    t, first, n = time.perf_counter(), None, 0
    with client.stream("POST", "/v1/audio/speech", json=body) as r:
        r.raise_for_status()
        for chunk in r.iter_raw():
            if first is None and chunk: first = time.perf_counter() - t
            n += len(chunk)
    return first, time.perf_counter() - t, n


def run(cfg: dict, device: str, log) -> dict:
    import httpx
    from voice_agent.server.deps import assemble
    from voice_agent.server.routers.audio import router
    from voice_agent.server.state import ServerState
    s, tts = local_settings(), local_model("tts")
    from voice_agent.testing import ThreadServer
    server = ThreadServer(assemble(ServerState(s, {"tts": tts}), router))
    ways = {"pcm": {"input": REPLY, "response_format": "pcm"}, "sse": {"input": REPLY, "response_format": "pcm", "stream_format": "sse"}}
    m = {w: {"first": [], "total": []} for w in ways}
    try:
        with httpx.Client(base_url=server.url, timeout=300) as client:
            timed(client, ways["pcm"])  # warm up: the voice's first call
            for i in range(cfg["speech_repeats"]):
                for w in (ways if i % 2 == 0 else list(ways)[::-1]):  # alternated, so a drift of the machine hits both
                    first, total, n = timed(client, ways[w])
                    m[w]["first"].append(first); m[w]["total"].append(total)
    finally: server.stop()
    rows = [row("11 streamed speech", f"four-sentence reply, Piper, {label}: time to first byte vs to the last byte",
                median(m[w]["first"]), median(m[w]["total"]), "s", "first byte", "last byte", "A/B ≤ 0.5",
                lambda a, b, r: r <= 0.5, ratio=paired_ratio(m[w]["first"], m[w]["total"]),
                note=f"{len(m[w]['first'])} runs over HTTP on a socket")
            for w, label in (("pcm", "chunked pcm"), ("sse", "stream_format sse"))]
    return {"speech_stream": {"rows": rows, "details": {"tts": s.tts_model, "reply": REPLY, "runs_s": m}}}
