"""Benchmark 16: `/v1/realtime` against a Pipecat pipeline on the same models, side by side in one run.

What people would build instead of calling our realtime endpoint: a Pipecat voice pipeline on the same local models.
Both sides hear the same espeak-ng questions, sent the same way, and are timed the same way.

- A, ours, as benchmark 12 measures it: `voice-agent serve --profile local` in a process of its own; the official `openai`
  client's realtime connection; `server_vad` at the shipped `silence_duration_ms` (b12's setting). Beside it (the second
  row), a second session with `semantic_vad` (eagerness `auto`): our turn detection on the same Smart Turn model as Pipecat's.
- B, Pipecat (`pipecat-ai`, the dev extra), as its quickstart builds a voice agent: `input -> WhisperSTTService ->
  user aggregator (Silero VAD, the default stop strategy: LocalSmartTurnAnalyzerV3, Smart Turn v3.2 from the wheel) ->
  OpenAILLMService -> PiperTTSService -> output -> assistant aggregator`, under a `PipelineWorker`, in this process. The
  same models: faster-whisper tiny.en from the `local` profile's packaged folder (`device="cpu"`, `compute_type="int8"`
  as ours; `OMP_NUM_THREADS` = the cores, the threads our server gives it), the LLM is our server's
  `/v1/chat/completions` (the same SmolLM2 GGUF on llama.cpp; the same system prompt), Piper's `en_US-joe-medium` from the
  packaged voice folder. Pipecat's defaults otherwise (VAD stop 0.2 s, Whisper's `no_speech_prob` 0.4, sentence-by-sentence
  TTS, 16 kHz in, 24 kHz out). Nothing is downloaded: each service is given the local file.
- The audio: each question is espeak-ng speech at 24 kHz, sent like a microphone: 20 ms of PCM16 every 20 ms (each piece
  once "recorded"), then silence until the reply is done. Ours: `input_audio_buffer.append` events
  (`voice_agent.testing.spoken_turn`). Pipecat: a `BaseInputTransport` whose microphone pushes the same 20 ms pieces as
  `InputAudioRawFrame`s, resampled to the pipeline's 16 kHz with Pipecat's stream resampler, as its network transports do.
- End of speech: the moment the last sample above 2% of full scale was "spoken" (`voice_agent.testing.voiced_seconds`,
  the same for both). First audio: ours, the arrival of the first `response.output_audio.delta` at the client; Pipecat,
  the first audio frame its output transport writes (a `BaseOutputTransport` that takes frames as fast as they come, as
  our client takes deltas; a reply is done at Pipecat's `BotStoppedSpeakingFrame`, as ours at `response.done`). Pipecat's
  figure has no network hop in it; ours has the loopback WebSocket. Both include the turn detection's wait after speech.
  Where the time goes, per side (medians, seconds after the end of speech, in the note; each turn's in the JSON details):
  ours, the first `speech_stopped`, transcription `.completed`, `response.created`, transcript delta; Pipecat, its last
  VAD stop, the transcript, the turn's end (`UserStoppedSpeakingFrame`), the LLM's first text, the TTS's first audio.
- 12 questions (b12's), one warm-up turn per side first (not counted). Each question is asked in a fresh conversation: a
  new realtime session for ours (opened and configured before the clock starts), an emptied context for Pipecat. In one
  conversation of 12 the two sides' SmolLM2-135M drifted apart with the history (one fell into "The answer is the answer
  is ..." loops, whose first sentence never ends), and that, not the pipeline, decided the first audio. Per question the
  sides take turns in a rotating order, so a drifting machine hits each alike; a side is idle while another is asked. p50 and p90 per side; A/B is
  our p50 over Pipecat's (goal ≤ 0.8). A turn with no audio within 60 s counts as unanswered (no figure) and is named
  in the note. The load average (1 min) at the start and the end is in the row's note: figures from a loaded machine are
  labelled so.

    .venv/bin/python bench/run.py --only pipecat     # or: .venv/bin/python bench/b16_pipecat.py (prints each turn)

About 5 minutes on 2 cores (every question is spoken at real-time pace three times).
"""
from __future__ import annotations
import asyncio, os, sys, time
from pathlib import Path
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from b12_realtime import QUESTIONS, espeak_24k  # noqa: E402
from voice_agent.testing import (CHUNK_MS, REALTIME_RATE as RATE, configure, events_until, realtime_connect as connect,  # noqa: E402
                                 spoken_turn, voiced_seconds)

TURN_TIMEOUT = 60  # seconds for one turn, end to end
SIDES = ("ours", "ours semantic", "pipecat")


# %% B: Pipecat, fed like a microphone
def pipecat_transports():
    "Pipecat's transport base classes made into a microphone that plays questions and a loudspeaker that notes first audio."
    from pipecat.audio.utils import create_stream_resampler
    from pipecat.frames.frames import InputAudioRawFrame
    from pipecat.transports.base_input import BaseInputTransport
    from pipecat.transports.base_output import BaseOutputTransport

    class Microphone(BaseInputTransport):
        "An input transport whose audio is questions played at real-time pace, 20 ms pieces of 24 kHz PCM16 resampled to the pipeline's rate."
        def __init__(self, params, **kw):
            super().__init__(params, **kw)
            self._resampler = create_stream_resampler()

        async def start(self, frame):
            await super().start(frame)
            await self.set_transport_ready(frame)

        async def say(self, x: np.ndarray, stop: asyncio.Event) -> float:
            "Send `x` like `voice_agent.testing.microphone` does (20 ms every 20 ms), then silence until `stop`; when it began."
            n, t0, k = RATE*CHUNK_MS//1000, time.perf_counter(), 0
            silence = np.zeros(n, np.float32)
            while True:
                piece = x[k*n:(k+1)*n]
                if not len(piece):
                    if stop.is_set(): return t0
                    piece = silence
                await asyncio.sleep(max(0.0, t0 + (k + 1)*CHUNK_MS/1000 - time.perf_counter()))
                audio = await self._resampler.resample((np.clip(piece, -1, 1)*32767).astype("<i2").tobytes(), RATE, self.sample_rate)
                if audio: await self.push_audio_frame(InputAudioRawFrame(audio=audio, sample_rate=self.sample_rate, num_channels=1))
                k += 1

    class Speaker(BaseOutputTransport):
        "An output transport that takes audio as fast as it comes (as our client takes deltas) and notes each reply's first frame written."
        def __init__(self, params, **kw):
            super().__init__(params, **kw)
            self.first = None

        async def start(self, frame):
            await super().start(frame)
            await self.set_transport_ready(frame)

        async def write_audio_frame(self, frame) -> bool:
            if self.first is None: self.first = time.perf_counter()
            return True

    return Microphone, Speaker


class PipecatAgent:
    "A Pipecat voice pipeline on the `local` profile's models and our server's chat endpoint, asked one spoken question at a time."
    def __init__(self, url: str, models: dict[str, str], system_prompt: str):
        self.url, self.models, self.system_prompt = url, models, system_prompt
        self.heard, self.said, self.errors, self.stages, self.done = [], [], [], {}, asyncio.Event()

    async def start(self):
        "Build the pipeline (loading Whisper and Piper from their local files) and run it until `stop`."
        from loguru import logger
        logger.remove(); logger.add(sys.stderr, level="WARNING")  # Pipecat logs every frame at DEBUG
        from pipecat.audio.vad.silero import SileroVADAnalyzer
        from pipecat.frames.frames import (BotStoppedSpeakingFrame, ErrorFrame, LLMTextFrame, TranscriptionFrame, TTSAudioRawFrame,
                                           UserStoppedSpeakingFrame, VADUserStoppedSpeakingFrame)
        from pipecat.observers.base_observer import BaseObserver
        from pipecat.pipeline.pipeline import Pipeline
        from pipecat.pipeline.worker import PipelineParams, PipelineWorker
        from pipecat.processors.aggregators.llm_context import LLMContext
        from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair, LLMUserAggregatorParams
        from pipecat.services.openai.llm import OpenAILLMService
        from pipecat.services.piper.tts import PiperTTSService
        from pipecat.services.whisper.stt import WhisperSTTService
        from pipecat.transports.base_transport import TransportParams
        from pipecat.workers.runner import WorkerRunner
        Microphone, Speaker = pipecat_transports()
        tts_folder = Path(self.models["tts"])
        voice = next(tts_folder.glob("*.onnx")).stem  # en_US-joe-medium: Pipecat loads <download_dir>/<voice>.onnx, no download
        self.mic = Microphone(TransportParams(audio_in_enabled=True))
        self.speaker = Speaker(TransportParams(audio_out_enabled=True))
        stt = WhisperSTTService(device="cpu", compute_type="int8", settings=WhisperSTTService.Settings(model=self.models["stt"]))
        llm = OpenAILLMService(api_key="unused", base_url=self.url + "/v1",
                               settings=OpenAILLMService.Settings(model="llm", system_instruction=self.system_prompt))
        tts = PiperTTSService(download_dir=tts_folder, settings=PiperTTSService.Settings(voice=voice))
        self.context = LLMContext()
        user, assistant = LLMContextAggregatorPair(self.context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer()))
        agent = self

        class Watch(BaseObserver):
            async def on_push_frame(self, data):
                f, now = data.frame, time.perf_counter()
                if isinstance(f, TranscriptionFrame): agent.heard.append(f.text)
                elif isinstance(f, LLMTextFrame): agent.said.append(f.text)
                elif isinstance(f, ErrorFrame): agent.errors.append(f.error)
                elif isinstance(f, BotStoppedSpeakingFrame) and agent.speaker.first is not None: agent.done.set()
                for name, kind in STAGES.items():  # the last VAD stop before the turn ended; the first of the others
                    if isinstance(f, kind) and (name not in agent.stages or name == "vad_stopped" and "turn_ended" not in agent.stages):
                        agent.stages[name] = now

        STAGES = {"vad_stopped": VADUserStoppedSpeakingFrame, "transcript": TranscriptionFrame, "turn_ended": UserStoppedSpeakingFrame,
                  "llm_text": LLMTextFrame, "tts_audio": TTSAudioRawFrame}
        self.worker = PipelineWorker(Pipeline([self.mic, stt, user, llm, tts, self.speaker, assistant]), params=PipelineParams(),
                                     observers=[Watch(observe_every_push=False)], cancel_on_idle_timeout=False)
        started = asyncio.Event()

        @self.worker.event_handler("on_pipeline_started")
        async def _started(worker, frame): started.set()
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(self.worker)
        self.running = asyncio.ensure_future(runner.run())
        await asyncio.wait_for(started.wait(), 60)

    async def turn(self, x: np.ndarray) -> dict:
        "Ask `x` aloud; heard, said, status, first_audio_s (end of speech -> first audio frame written) and when each stage began."
        self.heard, self.said, self.stages, self.speaker.first = [], [], {}, None
        self.done.clear()
        stop = asyncio.Event()
        mic = asyncio.ensure_future(self.mic.say(x, stop))
        t_start = time.perf_counter()
        try: await asyncio.wait_for(self.done.wait(), TURN_TIMEOUT); status = "completed"
        except TimeoutError: status = "unanswered" if self.speaker.first is None else "not finished"
        finally:
            stop.set(); await mic
        end = t_start + voiced_seconds(x)
        return {"heard": " ".join(h.strip() for h in self.heard), "said": "".join(self.said), "status": status,
                "first_audio_s": None if self.speaker.first is None else float(self.speaker.first - end),
                "stages_s": {k: round(float(t - end), 3) for k, t in self.stages.items()}}

    def reset(self):
        "Forget the conversation (before each question)."
        self.context.set_messages([])

    async def stop(self):
        await self.worker.cancel()
        try: await asyncio.wait_for(self.running, 30)
        except TimeoutError: self.running.cancel()


# %% A: ours, as b12 asks it
async def semantic(conn):
    "session.update with semantic_vad (eagerness auto), then wait for session.updated."
    await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "auto"}}}})
    await events_until(conn, "session.updated", 30)


OUR_STAGES = {"speech_stopped": "input_audio_buffer.speech_stopped", "transcript": "conversation.item.input_audio_transcription.completed",
              "response_created": "response.created", "text": "response.output_audio_transcript.delta"}


async def ours_turn(url: str, x: np.ndarray, setup) -> dict:
    "`spoken_turn` in a new session set up by `setup(conn)` (not timed); a turn not answered in time counts as unanswered; when each stage's first event arrived."
    async with connect(url) as conn:
        await events_until(conn, "session.created", 30)
        await setup(conn)
        try: t = await spoken_turn(conn, x, timeout=TURN_TIMEOUT)
        except TimeoutError: return {"heard": None, "said": "", "status": "unanswered", "first_audio_s": None, "stages_s": {}}
    out = {k: t[k] for k in ("heard", "said", "status")} | {"first_audio_s": None if t["first_audio_s"] is None else float(t["first_audio_s"])}
    first = next((at for at, e in t["events"] if e.type == "response.output_audio.delta"), None)
    end = None if first is None else first - t["first_audio_s"]
    out["stages_s"] = {k: round(float(next(at for at, e in t["events"] if e.type == kind) - end), 3) for k, kind in OUR_STAGES.items()
                       if end is not None and any(e.type == kind for _, e in t["events"])}
    return out


async def side_by_side(url: str, qs: list[np.ndarray], pipecat: PipecatAgent, silence_ms: int|None, say=lambda s: None) -> dict:
    "Each question to each side in a rotating order, each time in a fresh conversation; {side: [turn, ...]}."
    async with connect(url) as conn:  # warm-up, on a connection of its own (as b12)
        await events_until(conn, "session.created", 30)
        await spoken_turn(conn, qs[0], timeout=120)
    await pipecat.start()
    try:
        await pipecat.turn(qs[0])
        ask = {"ours": lambda x: ours_turn(url, x, lambda c: configure(c, silence_ms)), "ours semantic": lambda x: ours_turn(url, x, semantic),
               "pipecat": pipecat.turn}
        out = {k: [] for k in SIDES}
        for i, x in enumerate(qs):
            for side in SIDES[i % 3:] + SIDES[:i % 3]:
                pipecat.reset()
                t = await ask[side](x)
                out[side].append(t)
                say(f"  q{i+1} {side:13s} {t['first_audio_s'] if t['first_audio_s'] is None else round(t['first_audio_s'], 3)} s  "
                    f"heard {t['heard']!r}, said {t['said'][:60]!r}")
                await asyncio.sleep(0.3)
        return out
    finally: await pipecat.stop()


def run(cfg: dict, device: str, log, say=lambda s: None) -> dict:
    from common import child_env, median, percentile, row
    from voice_agent.config import Settings
    from voice_agent.profiles import LOCAL_SYSTEM_PROMPT, local_models
    from voice_agent.testing import free_port, start_server, stop_server, voice_agent_cmd
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))  # Pipecat's faster-whisper: the threads ours uses (before ctranslate2 loads)
    n, shipped = cfg.get("pipecat_questions") or len(QUESTIONS), Settings().realtime_silence_ms
    port = free_port()
    proc = start_server(voice_agent_cmd("serve", "--profile", "local", "--port", port), child_env(HF_HUB_OFFLINE="1"), port,
                        Path(log).parent/"pipecat-server.log", group=True)
    url = f"http://127.0.0.1:{port}"
    try:
        qs = [espeak_24k(q) for q in QUESTIONS[:n]]
        load = os.getloadavg()
        r = asyncio.run(side_by_side(url, qs, PipecatAgent(url, local_models(), LOCAL_SYSTEM_PROMPT), shipped, say))
        load = (load[0], os.getloadavg()[0])
    finally: stop_server(proc)
    first = {k: [t["first_audio_s"] for t in r[k] if t["first_audio_s"] is not None] for k in SIDES}
    missed = {k: [i + 1 for i, t in enumerate(r[k]) if t["first_audio_s"] is None] for k in SIDES}
    p = {k: (percentile(first[k], 50), percentile(first[k], 90)) for k in SIDES}
    stages = {k: {st: round(float(median([t["stages_s"][st] for t in r[k] if st in t["stages_s"]])), 3)
                  for st in dict.fromkeys(st for t in r[k] for st in t["stages_s"])} for k in SIDES}
    fmt = lambda k: f"{k}: p50 {p[k][0]:.3f} s, p90 {p[k][1]:.3f} s ({len(first[k])}/{n} answered)" if first[k] else f"{k}: no answer"
    p90 = lambda k: "-" if p[k][1] is None else f"{p[k][1]:.2f} s"
    loaded = f"load average (1 min) {load[0]:.2f} -> {load[1]:.2f}"
    common_note = f"load average {load[0]:.2f} -> {load[1]:.2f}; {fmt('pipecat')}; unanswered (question #): " + \
                  ", ".join(f"{k} {v}" for k, v in missed.items()) + f"; Pipecat's stages (median s after speech) {stages['pipecat']}"
    rows = [row("16 pipecat", f"end of speech -> first audio, p50 of {n} spoken questions at real-time pace: /v1/realtime "
                f"(server_vad {shipped} ms, as b12) vs a Pipecat pipeline on the same models (Silero, Smart Turn v3.2, Whisper "
                f"tiny.en, our chat endpoint, Piper joe); p90 {p90('ours')} vs {p90('pipecat')}; {loaded}", p["ours"][0], p["pipecat"][0], "s", "realtime", "Pipecat", "A/B ≤ 0.8",
                lambda a, b, r_: r_ <= 0.8, note=f"{fmt('ours')}; stages {stages['ours']}; {common_note}; e.g. heard {r['ours'][0]['heard']!r}, "
                f"said {r['ours'][0]['said'][:50]!r}; Pipecat heard {r['pipecat'][0]['heard']!r}, said {r['pipecat'][0]['said'][:50]!r}"),
            row("16 pipecat", f"the same, ours with semantic_vad (eagerness auto: Smart Turn v3.2, as Pipecat's turn end) vs Pipecat; "
                f"p90 {p90('ours semantic')} vs {p90('pipecat')}; {loaded}",
                p["ours semantic"][0], p["pipecat"][0], "s", "realtime semantic_vad", "Pipecat", "A/B ≤ 0.8",
                lambda a, b, r_: r_ <= 0.8, note=f"{fmt('ours semantic')}; stages {stages['ours semantic']}; {common_note}")]
    details = {"first_audio_s": {k: [t["first_audio_s"] for t in r[k]] for k in SIDES},
               "turns": {k: [{x: t[x] for x in ("heard", "said", "status", "stages_s")} for t in r[k]] for k in SIDES},
               "p50_p90": p, "stages_s": stages, "loadavg_1min": load, "silence_duration_ms": shipped, "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    return {"pipecat": {"rows": rows, "details": details}}


if __name__ == "__main__":  # python bench/b16_pipecat.py [QUESTIONS]: each turn printed as it goes
    from common import BENCH, markdown_table, as_dicts
    logs = BENCH/"results"/"logs"/"b16"; logs.mkdir(parents=True, exist_ok=True)
    out = run({"pipecat_questions": int(sys.argv[1]) if len(sys.argv) > 1 else None}, "cpu", logs/"run.log",
              say=lambda s: print(s, flush=True))
    rows = as_dicts(out["pipecat"]["rows"])
    print(markdown_table(rows))
    for r in rows: print(f"\n{r['a_label']}: {r['note']}")
