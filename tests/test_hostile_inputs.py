"""Hostile inputs over a real socket, on `voice-agent serve --profile local` (issue 19: items 1, 2 and 12's HTTP part).

A decode bomb (a FLAC whose honest header says 600 s of 8 channels at 192 kHz: 1 MB of silence that decodes to
3.4 GiB of float32), tool schemas whose llama.cpp grammar would not fit (`maxLength: 1e9`; `maxLength: 10000` already
overflowed llama.cpp's stack), JSON nested deeper than Python parses, and text with a lone UTF-16 surrogate: each
must be answered with a 4xx that says what was wrong, the server must live on, and its peak memory (`VmHWM` of the
server process, reset before each attack through `/proc/PID/clear_refs`) must stay bounded.
Run with `pytest -s` to see the figures.
"""
import concurrent.futures as cf
import io, json, re
from pathlib import Path

import httpx, numpy as np, pytest, soundfile as sf

ATTACK_MB = 300  # what one attack may add to the server's peak memory (before: the decode bomb added 4,500 MB; the grammar bomb
                 # with maxLength 1e9 grew the server to 23 GB until the OOM killer ended it, and maxLength 1e4 segfaulted it)


def reset_peak(proc):
    "Reset the server process's peak RSS (VmHWM) to its current RSS."
    Path(f"/proc/{proc.pid}/clear_refs").write_text("5")


def peak_mb(proc) -> float:
    "The server process's peak RSS since the last reset, in MB."
    return int(re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{proc.pid}/status").read_text()).group(1))/1024


def flac(seconds: int, channels: int, rate: int) -> bytes:
    "A FLAC of silence, written a second at a time (its header tells the truth)."
    buf, second = io.BytesIO(), np.zeros((rate, channels), np.int16)
    with sf.SoundFile(buf, "w", rate, channels, format="FLAC", subtype="PCM_16") as f:
        for _ in range(seconds): f.write(second)
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(local_server):
    "The local profile (shared: conftest.py), an httpx client for it, and its process, alive before each test."
    http = httpx.Client(base_url=local_server.url, timeout=300)
    yield local_server, http
    http.close()


@pytest.fixture(autouse=True)
def alive_after(request):
    "Every attack on the local server leaves it alive and answering."
    yield
    if "server" not in request.fixturenames: return
    s, http = request.getfixturevalue("server")
    assert s.proc.poll() is None, f"the server died (exit {s.proc.returncode}):\n{s.log.read_text()[-3000:]}"
    assert http.get("/health/live").status_code == 200


def test_decode_bomb_is_refused_from_its_header(server):
    "600 s x 8 channels x 192 kHz: a 413 naming the limit and the setting on both upload routes, 4 at once too, memory flat."
    s, http = server
    bomb = flac(600, 8, 192000)
    print(f"\n[decode bomb] {len(bomb):,} bytes of FLAC; header: {sf.info(io.BytesIO(bomb)).frames:,} frames x 8 channels")
    reset_peak(s.proc); base = peak_mb(s.proc)
    for path, field in [("/stt", "audio"), ("/v1/audio/transcriptions", "file")]:
        r = http.post(path, files={field: ("bomb.flac", bomb, "audio/flac")})
        assert r.status_code == 413, (path, r.status_code, r.text[:300])
        e = r.json()["error"]
        assert (e["code"], e["param"]) == ("audio_too_large", field), e
        assert "921,600,000 samples (600.0 s x 8 channels at 192000 Hz" in e["message"] and "MODEL_SERVER_MAX_AUDIO_SECONDS" in e["message"], e
    with cf.ThreadPoolExecutor(4) as ex:
        codes = list(ex.map(lambda _: http.post("/v1/audio/transcriptions", files={"file": ("b.flac", bomb, "audio/flac")}).status_code, range(4)))
    assert codes == [413]*4, codes
    rise = peak_mb(s.proc) - base
    print(f"[decode bomb] 6 uploads refused; server peak +{rise:.0f} MB (before the fix: 200 with empty text, +4,500 MB each)")
    assert rise < ATTACK_MB, rise


def test_longest_upload_allowed_decodes_in_blocks(server):
    "600 s of stereo 48 kHz, the most the limits allow: transcribed, its decode holding its 16 kHz output and a block."
    s, http = server
    data = flac(600, 2, 48000)
    reset_peak(s.proc); base = peak_mb(s.proc)
    r = http.post("/v1/audio/transcriptions", files={"file": ("long.flac", data, "audio/flac")})
    assert r.status_code == 200, r.text[:300]
    rise = peak_mb(s.proc) - base
    print(f"\n[longest upload] 600 s stereo 48 kHz ({len(data):,} bytes): server peak +{rise:.0f} MB, Whisper included "
          "(decoded whole before the fix: +450 MB)")
    assert rise < 250, rise


def _note(**schema) -> list[dict]:
    return [{"type": "function", "function": {"name": "note", "description": "Write a note down",
             "parameters": {"type": "object", "properties": {"text": schema}, "required": ["text"]}}}]


@pytest.mark.parametrize("schema, valid", [
    ({"type": "string", "maxLength": 10_000}, True),  # llama.cpp's grammar parser overflowed its stack: the server died
    ({"type": "string", "maxLength": 10**9}, True),  # the server grew to 23 GB and the OOM killer ended it
    ({"type": "string", "minLength": 10**9}, False),  # can't be met: a refused call, reported in the reply
    ({"type": "array", "items": {"type": "string"}, "maxItems": 10**9}, True)], ids=["maxLength-1e4", "maxLength-1e9", "minLength-1e9", "maxItems-1e9"])
def test_grammar_bomb_is_compiled_bounded(server, schema, valid):
    "Huge repetition bounds under `tool_choice: required`: a 200 with the call checked against the whole schema, memory flat."
    s, http = server
    reset_peak(s.proc); base = peak_mb(s.proc)
    r = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Take a note: buy milk."}],
                                                "tools": _note(**schema), "tool_choice": "required", "max_tokens": 60})
    assert r.status_code == 200, r.text[:300]
    m = r.json()["choices"][0]["message"]
    rise = peak_mb(s.proc) - base
    print(f"\n[grammar bomb] {schema}: {m.get('tool_calls') or m.get('content')!r:.160}; server peak +{rise:.0f} MB")
    if valid: assert [c["function"]["name"] for c in m["tool_calls"]] == ["note"], m
    else: assert not m.get("tool_calls") and "is too short" in m["content"], m
    assert rise < ATTACK_MB, rise


@pytest.mark.parametrize("params, why", [
    ({"type": "object", "properties": {"t": {"type": "string", "pattern": "^(a{1000}){1000}$"}}}, "over the limit of 10,000"),
    ({"$ref": "https://example.com/schema.json"}, "nothing is fetched"),
    ({"type": "object", "properties": {"t": {"type": "strng"}}}, "is not a valid JSON Schema"),
    ({"$defs": {"A": {"$ref": "#/$defs/A"}}, "$ref": "#/$defs/A"}, "leads back to itself")], ids=["pattern", "remote-ref", "invalid", "ref-loop"])
def test_uncheckable_tool_schemas_are_400(server, params, why):
    "Schemas that can't be checked (or would be fetched) are refused before the LLM's turn, naming the tool."
    _, http = server
    for choice in ("auto", "required"):
        r = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "tool_choice": choice,
                                                    "tools": [{"type": "function", "function": {"name": "f", "parameters": params}}]})
        assert r.status_code == 400, (choice, r.status_code, r.text[:300])
        e = r.json()["error"]
        assert e["param"] == "tools" and "tools[0].function.parameters (f)" in e["message"] and why in e["message"], e


def nested(n: int) -> str: return "[" * n + "]" * n


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "hi"}], "metadata": %s}'),
    ("/generate", '{"query": "hi", "history": %s}'),
    ("/v1/audio/speech", '{"input": "hi", "voice": %s}'),
    ("/tts", '{"text": "hi", "voice": %s}')], ids=["chat", "generate", "speech", "tts"])
def test_deeply_nested_json_is_400(server, path, body):
    "JSON nested past Python's parser: a 400 that says so (it was FastAPI's 'There was an error parsing the body')."
    _, http = server
    r = http.post(path, content=body % nested(5000), headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text[:300]
    e = r.json()["error"]
    assert e["code"] == "json_too_deep" and "nests deeper than this server reads" in e["message"], e


def test_deeply_nested_tool_arguments_and_schemas(server):
    "Nesting that reaches the model's thread: earlier call arguments 1,900 levels deep (a string, so the body parses), a deep schema."
    _, http = server
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": nested(1900)}}
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "done"}]
    r = http.post("/v1/chat/completions", json={"messages": msgs, "max_tokens": 3, "tools": [{"type": "function", "function": {"name": "f"}}]})
    assert r.status_code == 200, r.text[:300]
    deep = {"type": "string"}
    for _ in range(100): deep = {"type": "object", "properties": {"a": deep}}
    r = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "tool_choice": "required",
                                                "tools": [{"type": "function", "function": {"name": "f", "parameters": deep}}]})
    assert r.status_code == 400 and "nests 202 levels deep, over the limit of 64" in r.json()["error"]["message"], r.text[:300]


S = "\\ud800"  # a lone surrogate, as JSON escapes it


@pytest.mark.parametrize("path, body, where", [
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "hi %s"}], "max_tokens": 3}' % S, "messages[0].content"),
    ("/v1/chat/completions", '{"messages": [{"role": "system", "content": "%s"}, {"role": "user", "content": "hi"}], "stream": true}' % S,
     "messages[0].content"),
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": '
                             '{"name": "f", "description": "%s"}}]}' % S, "tools[0].function.description"),
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "hi"}], "model": "gpt-%s"}' % S, "model"),
    ("/generate", '{"query": "hi", "system_prompt": "be %s", "max_new_tokens": 3}' % S, None),
    ("/v1/audio/speech", '{"input": "hi", "instructions": "calm %s"}' % S, "instructions")],
    ids=["chat-content", "chat-system-streamed", "chat-tool-description", "chat-model", "generate-system", "speech-instructions"])
def test_lone_surrogates_are_400(server, path, body, where):
    "A lone surrogate in any text field: a 400 that names it (it was 'utf-8 codec can't encode ... in position 111', or ignored)."
    _, http = server
    r = http.post(path, content=body.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 400, (r.status_code, r.text[:300])
    e = r.json()["error"]
    assert e["code"] == "invalid_text" and "lone UTF-16 surrogate" in e["message"], e
    if where: assert e["param"] == where and e["message"].startswith(where), e


def test_decodes_are_admitted_like_model_work(monkeypatch):
    "Uploads beyond `DECODES_AT_ONCE` running and `max_queue` waiting get a 503 (a decoder that takes 1 s, served by uvicorn)."
    import time
    from voice_agent.config import Settings
    from voice_agent.server import audio_io
    from voice_agent.server.app import create_app
    from voice_agent.server.fakes import fakes, tone_wav
    from voice_agent.testing import ThreadServer, free_port
    real = audio_io.decode_mono
    def slow(*a, **kw): time.sleep(1.0); return real(*a, **kw)
    monkeypatch.setattr(audio_io, "decode_mono", slow)
    port = free_port()
    with ThreadServer(create_app(Settings(host="127.0.0.1", port=port, max_queue=1), models=fakes()), port, timeout=30) as srv:
        post = lambda _: httpx.post(f"{srv.url}/v1/audio/transcriptions", timeout=60, files={"file": ("a.wav", tone_wav(1.0), "audio/wav")})
        with cf.ThreadPoolExecutor(5) as ex: rs = list(ex.map(post, range(5)))
    codes = sorted((r.status_code, r.json().get("error", {}).get("code") if r.status_code != 200 else None) for r in rs)
    print(f"\n[decode gate] 5 uploads at once, {audio_io.DECODES_AT_ONCE} decoding and 1 waiting at most: {codes}")
    refused = [r for r in rs if r.status_code == 503 and r.json()["error"]["code"] == "decode_queue_full"]
    assert len(refused) == 5 - audio_io.DECODES_AT_ONCE - 1, codes
    assert refused[0].headers["retry-after"] == "1" and "MODEL_SERVER_MAX_QUEUE=1" in refused[0].json()["error"]["message"]
    assert all(r.status_code in (200, 503) for r in rs), codes
