"""The realtime voice panel in a real browser: the browser's microphone, `/v1/realtime`, the reply played as it streams.

Twice: over WebRTC (the panel's default: `POST /v1/realtime/calls` from the page, the microphone and the reply on media
tracks, the events on the data channel) and over the WebSocket (`transport="websocket"`, the fallback).

The test starts `voice-agent serve --profile local` (SmolLM2, Whisper tiny.en, a Piper voice) with an API key, and
JupyterLab, on free ports; writes a notebook that shows `voice_agent.realtime_panel.RealtimePanel` for the server and a
widget the kernel fills from the panel's state and transcript; and runs it in headless Chromium whose fake microphone
plays a WAV file: espeak-ng asking "What is the capital of France?", then silence. It presses Start and checks that the
browser (not the kernel) opened the session with the key's subprotocol, the panel heard the question, went through
thinking and speaking, showed a reply that mentions Paris, went back to listening, and that the kernel saw the same.
Screenshots go to artifacts/. Run with `pytest -s` to see what was heard and said, and how fast.
"""
import json, os, re, sys, time, uuid
from pathlib import Path
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, lab_command, lab_settings  # noqa: E402
from voice_agent.testing import espeak, free_port, start_server, stop_server as stop, wait_ready  # noqa: E402

QUESTION = "What is the capital of France?"
KEY = "browser-panel-key"
SILENCE_BEFORE_S, SILENCE_AFTER_S = 2, 8  # the fake microphone plays silence, the question once, silence; then (Chromium) silence

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"{CHROMIUM} is missing: install Debian's chromium (./run test does, as root: apt-get install chromium)")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("browser_realtime")


@pytest.fixture(scope="module")
def env(work):
    e = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false",
         "IPYTHONDIR": str(work/"ipython"), "JUPYTER_CONFIG_DIR": str(work/"jupyter_config"),
         "JUPYTER_RUNTIME_DIR": str(work/"jupyter_runtime"), "JUPYTERLAB_SETTINGS_DIR": str(work/"lab_settings"),
         "JUPYTERLAB_WORKSPACES_DIR": str(work/"lab_workspaces")}
    for k in ("MODEL_SERVER_API_KEY", "MODEL_SERVER_API_KEY_FILE", "MODEL_SERVER_URL"): e.pop(k, None)
    return e


@pytest.fixture(scope="module")
def model_server(work, env):
    "`voice-agent serve --profile local` with an API key, on a free port, ready."
    port, log = free_port(), work/"server.log"
    proc = start_server([sys.executable, "-m", "voice_agent.cli", "serve", "--profile", "local", "--port", str(port)],
                        {**env, "MODEL_SERVER_API_KEY": KEY}, port, log, ready=False, timeout=120, cwd=work)
    url = f"http://127.0.0.1:{port}"
    try:
        secs = wait_ready(url, proc, timeout=240, log=log, ok=lambda status: status == 401)  # the key is asked for
        t1 = time.monotonic()
        wait_ready(url, proc, key=KEY, timeout=240, log=log)
        print(f"\nlocal server ready in {secs + time.monotonic() - t1:.1f} s")
        yield url, proc, log
    finally: stop(proc)


@pytest.fixture(scope="module")
def microphone(work) -> Path:
    "What the fake microphone plays: the question (espeak-ng), then silence; a 16-bit mono WAV at 48 kHz, as Chromium reads."
    from voice_agent.audio import decode_audio, resample, wav_bytes
    raw = espeak(QUESTION, work/"question_espeak.wav")
    x, sr = decode_audio(raw.read_bytes())
    x = resample(x.mean(axis=1) if x.ndim > 1 else x, sr, 48000)
    x = np.concatenate([np.zeros(SILENCE_BEFORE_S*48000, np.float32), x, np.zeros(SILENCE_AFTER_S*48000, np.float32)])
    path = work/"microphone.wav"
    path.write_bytes(wav_bytes(x, 48000))
    return path


TRANSPORTS = ("webrtc", "websocket")

def write_notebook(folder: Path, url: str, transport: str) -> Path:
    "The panel for the server at `url`, and a widget in which the kernel writes what the panel told it."
    cells = [f"from voice_agent.realtime_panel import RealtimePanel\npanel = RealtimePanel({url!r}, api_key={KEY!r}, transport={transport!r})\npanel",
             "import html, json\nimport ipywidgets as W\nseen, mirror = [], W.HTML()\nmirror.add_class('kernel-view')\n"
             "def show(_=None):\n    if not seen or seen[-1] != panel.state: seen.append(panel.state)\n"
             "    mirror.value = '<pre>' + html.escape(json.dumps({'states': seen, 'turns': panel.turns, 'error': panel.error, 'via': panel.via})) + '</pre>'\n"
             "panel.observe(show, names=['state', 'transcript', 'error', 'via']); show()\nmirror"]
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {}, "outputs": [], "source": c}
                    for i, c in enumerate(cells)],
          "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
          "nbformat": 4, "nbformat_minor": 5}
    p = folder/f"realtime_{transport}.ipynb"
    p.write_text(json.dumps(nb, indent=1))
    return p


@pytest.fixture(scope="module")
def lab(work, env, model_server):
    "JupyterLab on a free port, serving a folder with the panel's notebook."
    root, token, port, log = work/"lab", uuid.uuid4().hex, free_port(), work/"lab.log"
    root.mkdir()
    for transport in TRANSPORTS: write_notebook(root, model_server[0], transport)
    lab_settings(Path(env["JUPYTERLAB_SETTINGS_DIR"]))
    t0 = time.monotonic()
    proc = start_server(lab_command(root, port, token), env, port, log, timeout=120, cwd=root, path=f"/api/status?token={token}")
    try:
        print(f"JupyterLab ready in {time.monotonic() - t0:.1f} s")
        yield f"http://127.0.0.1:{port}", token
    finally: stop(proc)


def timeline(events: list):
    "Print when the server's events of the first turn reached the browser, from its speech_stopped."
    first = {}
    for t, e in events: first.setdefault(e["type"], (t, e))
    if "input_audio_buffer.speech_stopped" not in first: return print("no speech_stopped event:", sorted(first))
    t0, stopped = first["input_audio_buffer.speech_stopped"]
    start = first.get("input_audio_buffer.speech_started", (t0, {}))[1]
    print(f"speech from {start.get('audio_start_ms')} to {stopped.get('audio_end_ms')} ms of the stream; from speech_stopped:")
    for k in ("conversation.item.input_audio_transcription.completed", "response.created", "response.output_audio_transcript.delta",
              "response.output_audio.delta", "response.done"):
        if k in first: print(f"  {k}: {(first[k][0] - t0)*1000:+.0f} ms")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_realtime_panel_answers_the_microphone(lab, work, microphone, model_server, transport):
    from playwright.sync_api import sync_playwright, expect
    base, token = lab
    url, server, server_log = model_server
    ARTIFACTS.mkdir(exist_ok=True)
    # the microphone: a file, played once (`%noloop`) so the question is not asked again over the reply on a slow machine
    args = CHROMIUM_ARGS + ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                            f"--use-file-for-fake-audio-capture={microphone}%noloop", "--autoplay-policy=no-user-gesture-required"]
    t0 = time.monotonic()
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(work/f"chromium_profile_{transport}"), executable_path=CHROMIUM, headless=True, args=args,
                                                   viewport={"width": 1200, "height": 1000})
        try:
            page = ctx.new_page()
            page.on("console", lambda m: m.type in ("error", "warning") and print("browser console:", m.text))
            sockets, events = [], []  # the panel's sockets; (time, server event) on the realtime one
            def on_socket(ws):
                sockets.append(ws.url)
                if "/v1/realtime" in ws.url: ws.on("framereceived", lambda f: events.append((time.monotonic(), json.loads(f))))
            page.on("websocket", on_socket)
            page.goto(f"{base}/lab/tree/realtime_{transport}.ipynb?reset&token={token}")
            page.wait_for_function("window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell')", timeout=90_000)
            page.wait_for_function("""() => {
                const w = window.jupyterapp.shell.currentWidget;
                return w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel
                       && w.sessionContext.session.kernel.status === 'idle'; }""", timeout=90_000)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            panel, mirror = page.locator(".va-realtime"), page.locator(".kernel-view")
            expect(panel).to_be_visible(timeout=60_000)
            expect(mirror).to_contain_text('"states": ["off"]', timeout=60_000)
            state = panel.locator(".va-rt-state")
            expect(state).to_have_attribute("data-state", "off")
            expect(panel).to_contain_text(url.replace("http://", "ws://") + "/v1/realtime")
            print(f"panel rendered after {time.monotonic()-t0:.1f} s")

            panel.locator("button.va-rt-toggle").click()
            expect(state).to_have_attribute("data-state", "listening", timeout=30_000)
            expect(panel.locator("button.va-rt-toggle")).to_contain_text("Stop")
            # the browser itself talks to the server (not the kernel): over WebRTC, no socket to /v1/realtime at all, and the panel
            # says which; over the WebSocket, its socket goes to the model server's port, not JupyterLab's
            realtime_sockets = [s for s in sockets if s.startswith(url.replace("http://", "ws://") + "/v1/realtime")]
            if transport == "webrtc":
                assert not realtime_sockets, sockets
                expect(panel).to_contain_text(url + "/v1/realtime/calls (WebRTC)", timeout=10_000)  # the call's URL, not a socket's
            else:
                assert realtime_sockets, sockets
                expect(panel).to_contain_text("(WebSocket)", timeout=10_000)
            t_listen = time.monotonic()
            print(f"listening after {t_listen-t0:.1f} s")

            user = panel.locator(".va-rt-user").first
            expect(user).to_contain_text(re.compile("capital", re.I), timeout=120_000)  # live words (italic, "va-rt-partial") or the transcript
            expect(user).not_to_have_class(re.compile("va-rt-partial"), timeout=60_000)  # the turn's own transcript
            heard = user.inner_text()
            print(f"heard after {time.monotonic()-t0:.1f} s: {heard!r}")
            expect(state).to_have_attribute("data-state", "speaking", timeout=120_000)
            print(f"speaking after {time.monotonic()-t0:.1f} s")
            reply = panel.locator(".va-rt-assistant").first
            expect(reply).not_to_have_text(re.compile(r"^Assistant:\s*…?\s*$"), timeout=30_000)
            panel.screenshot(path=str(ARTIFACTS/f"realtime_panel_speaking_{transport}.png"))
            expect(state).to_have_attribute("data-state", "listening", timeout=120_000)  # the reply played to its end
            said = reply.inner_text()
            print(f"reply played after {time.monotonic()-t0:.1f} s: {said!r}")
            if transport == "websocket":
                sent_s = page.evaluate("[...globalThis.__voice_agent_realtime.values()][0].sentMs/1000")
                print(f"the panel sent {sent_s:.1f} s of microphone audio in the {time.monotonic() - t_listen:.1f} s since it was listening")
                timeline(events)
                deltas = [e for _, e in events if e["type"] == "conversation.item.input_audio_transcription.delta"]
                print(f"live transcription deltas the panel showed while the question was spoken: {[d['delta'] for d in deltas]}")
            assert "france" in heard.lower(), heard
            assert "paris" in said.lower(), f"the local LLM's answer to {heard!r} does not mention Paris: {said!r}"
            assert "interrupted" not in said, said
            assert re.search(r"first sound \d+\.\d\d s after you stopped", said), said
            error = panel.locator(".va-rt-error")
            assert not error.inner_text().strip(), error.inner_text()
            panel.screenshot(path=str(ARTIFACTS/f"realtime_panel_{transport}.png"))
            page.screenshot(path=str(ARTIFACTS/f"realtime_notebook_{transport}.png"), full_page=True)

            # the kernel saw it all: the states the browser went through and the finished turns
            expect(mirror).to_contain_text('"speaking"', timeout=30_000)
            seen = json.loads(mirror.inner_text())
            print("the kernel saw:", seen)
            for s in ("off", "connecting", "listening", "thinking", "speaking"): assert s in seen["states"], seen
            assert seen["states"].index("thinking") < seen["states"].index("speaking"), seen
            roles = [r for r, _ in seen["turns"]]
            assert roles[:2] == ["user", "assistant"], seen
            assert "capital" in seen["turns"][0][1].lower() and "paris" in seen["turns"][1][1].lower(), seen
            assert seen["error"] == "" and seen["via"] == transport, seen

            panel.locator("button.va-rt-toggle").click()
            expect(state).to_have_attribute("data-state", "off", timeout=10_000)
            expect(panel.locator("button.va-rt-toggle")).to_contain_text("Start")
            expect(mirror).to_contain_text('"off"]', timeout=30_000)
        finally: ctx.close()
    assert server.poll() is None, server_log.read_text()[-3000:]
    if transport == "webrtc":  # the server served a call, and closed it when Stop was pressed
        deadline = time.monotonic() + 15
        while "realtime call closed" not in server_log.read_text() and time.monotonic() < deadline: time.sleep(0.2)
        log = server_log.read_text()
        assert "realtime call opened" in log and "realtime call closed" in log, log[-3000:]
    print(f"browser part took {time.monotonic()-t0:.1f} s; screenshots in {ARTIFACTS}")
