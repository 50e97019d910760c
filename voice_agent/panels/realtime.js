// voice_agent's realtime panel: the browser's microphone -> /v1/realtime (OpenAI Realtime API, GA events) -> the speakers.
// Over WebRTC by default (POST /v1/realtime/calls: the microphone and the reply on media tracks, so the browser's echo
// canceller hears the agent's voice; the events on the `oai-events` data channel), over the WebSocket where the server
// has no WebRTC (501) or the panel asks for it (transport "websocket").
const RATE = 24000;           // PCM16 rate of the session, in and out
const FRAME_S = 0.02;         // the microphone is sent in 20 ms appends
const LEAD_S = 0.03;          // a reply's first chunk starts this far ahead, so chunks that follow join without a click
const KEY_PROTOCOL = "openai-insecure-api-key.";
const WORKLET = `class VACapture extends AudioWorkletProcessor {
  constructor() { super(); this.n = Math.round(sampleRate*${FRAME_S}); this.buf = new Float32Array(this.n); this.i = 0; }
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (ch) for (let k = 0; k < ch.length; k++) {
      this.buf[this.i++] = ch[k];
      if (this.i === this.n) { this.port.postMessage(this.buf, [this.buf.buffer]); this.buf = new Float32Array(this.n); this.i = 0; }
    }
    return true;
  }
}
registerProcessor("va-capture", VACapture);`;

// Float32 audio at the microphone's rate -> PCM16 at 24 kHz, in pieces: a box filter over each output sample's span
// (enough against aliasing for speech going to a VAD and Whisper), linear interpolation when the input is slower.
export class Downsampler {
  constructor(inRate, outRate = RATE) { this.step = inRate/outRate; this.w = Math.max(1, Math.round(this.step)); this.pos = 0; this.tail = new Float32Array(0); }
  push(x) {
    const buf = new Float32Array(this.tail.length + x.length); buf.set(this.tail); buf.set(x, this.tail.length);
    const out = []; let pos = this.pos;
    for (;;) {
      const i = Math.floor(pos);
      if (this.step >= 1) {
        if (i + this.w > buf.length) break;
        let s = 0; for (let k = 0; k < this.w; k++) s += buf[i + k];
        out.push(s/this.w);
      } else {
        if (i + 1 >= buf.length) break;
        const f = pos - i; out.push(buf[i]*(1 - f) + buf[i + 1]*f);
      }
      pos += this.step;
    }
    const keep = Math.min(Math.floor(pos), buf.length);
    this.tail = buf.slice(keep); this.pos = pos - keep;
    const pcm = new Int16Array(out.length);
    for (let k = 0; k < out.length; k++) { const v = Math.max(-1, Math.min(1, out[k])); pcm[k] = v < 0 ? v*32768 : v*32767; }
    return pcm;
  }
}

export function toBase64(pcm) { // Int16Array (little-endian, as every browser's platform is) -> base64
  const b = new Uint8Array(pcm.buffer, pcm.byteOffset, pcm.byteLength); let s = "";
  for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode.apply(null, b.subarray(i, i + 0x8000));
  return btoa(s);
}

export function fromBase64(text) { // base64 PCM16 -> Float32Array in [-1, 1)
  const s = atob(text), n = s.length >> 1, out = new Float32Array(n);
  for (let i = 0; i < n; i++) { let v = s.charCodeAt(2*i) | (s.charCodeAt(2*i + 1) << 8); if (v >= 0x8000) v -= 0x10000; out[i] = v/32768; }
  return out;
}

export function callsUrl(url) { // the WebSocket URL of /v1/realtime -> the URL a WebRTC offer is posted to
  const u = new URL(url);
  u.protocol = u.protocol === "wss:" ? "https:" : "http:";
  u.pathname = u.pathname.replace(/\/$/, "") + "/calls";
  return u.toString();
}

function iceGathered(pc, ms) { // the offer carries our candidates (the server takes no trickled ones): wait for them, `ms` at most
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise(resolve => {
    const t = setTimeout(resolve, ms);
    pc.addEventListener("icegatheringstatechange", () => { if (pc.iceGatheringState === "complete") { clearTimeout(t); resolve(); } });
  });
}

export function closeMessage(code, reason, url) { // what a closed socket means, and what to do
  if (reason) return `the server closed the session: ${reason} (code ${code})`;
  if (code === 1006) return `could not connect to ${url} (or the connection dropped): check that the model server is running, ` +
    "that this browser can reach that address (a remote kernel's localhost is not yours: tunnel the port or use the server's " +
    "public URL), that an https page uses wss://, and the API key (a refused key closes the socket without a reason)";
  return `the connection closed (code ${code})`;
}

// One conversation per widget model, whatever the number of views: the microphone, the socket, the playback, the transcript.
export class Conversation {
  constructor(model, env = globalThis) {
    this.model = model; this.env = env; this.views = new Set();
    this.state = "off"; this.entries = []; this.byItem = new Map(); this.level = 0; this.errorText = "";
    this.ws = null; this.pc = null; this.dc = null; this.player = null; this.playing = false; this.callT0 = 0; this.via = ""; this.ctx = null; this.stream = null; this.nodes = []; this.down = null;
    this.sources = new Set(); this.chunks = []; this.playItem = null; this.playEnd = 0;
    this.response = null; this.dropped = new Set(); this.quiet = new Set(); this.stoppedAt = null; this.speech = false; this.gen = 0;
    this.sentMs = 0; this.sent = []; this.early = [];  // audio sent so far, [ms sent, when captured] per append (when the user's speech ended, by our clock); audio captured while connecting
  }
  emit() { for (const v of this.views) v(); }
  sync(fields) { for (const [k, v] of Object.entries(fields)) this.model.set(k, v); this.model.save_changes(); }
  setState(s) { if (this.state !== s) { this.state = s; this.sync({state: s}); } this.emit(); }
  showError(text) { this.errorText = text; this.sync({error: text}); this.emit(); }
  syncTranscript() {
    this.sync({transcript: this.entries.map(e => ({id: e.id, role: e.role, text: e.text, done: e.done, interrupted: e.interrupted,
                                                   latency_ms: e.latency_ms}))});
    this.emit();
  }
  entry(id, role) {
    let e = this.byItem.get(id);
    if (!e) { e = {id, role, text: "", done: false, interrupted: false, latency_ms: null}; this.byItem.set(id, e); this.entries.push(e); }
    return e;
  }
  send(event) {
    if (this.dc && this.dc.readyState === "open") this.dc.send(JSON.stringify(event));
    else if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(event));
  }

  async start() {
    if (this.ws || this.dc || this.state === "connecting") return;
    const url = this.model.get("url"), key = this.model.get("api_key"), gen = ++this.gen;
    const stale = () => gen !== this.gen;  // Stop was pressed meanwhile
    this.entries = []; this.byItem = new Map(); this.sentMs = 0; this.sent = []; this.early = []; this.dropped = new Set(); this.quiet = new Set(); this.response = null;
    this.showError(""); this.syncTranscript(); this.setState("connecting");
    try {
      const md = this.env.navigator && this.env.navigator.mediaDevices;
      if (!md || !md.getUserMedia) throw new Error("this page has no access to a microphone: browsers offer it only to secure pages " +
        "(https://, or http://localhost and http://127.0.0.1): open JupyterLab through localhost (an SSH tunnel) or https");
      // made while the Start click is still the user's gesture, so the browser lets it play
      this.ctx = new this.env.AudioContext({latencyHint: "interactive"});
      if (this.ctx.state === "suspended") this.ctx.resume();
      let stream;
      try {
        stream = await md.getUserMedia({audio: {channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true}});
      } catch (e) {
        throw new Error(e.name === "NotAllowedError" ? "the microphone was not allowed: allow it for this page (the icon at the left of the " +
          "address bar) and press Start again" : e.name === "NotFoundError" ? "no microphone was found: plug one in and press Start again"
          : `the microphone could not be opened: ${e.message || e.name}`);
      }
      if (stale()) { for (const t of stream.getTracks()) t.stop(); return; }
      this.stream = stream;
      await Promise.race([this.ctx.resume(), new Promise(r => setTimeout(r, 1000))]);
      if (this.ctx.state !== "running") throw new Error("the browser holds this page's sound until it is clicked: press Start " +
        "(started from Python, the panel needs a click in the page first)");
      await this.capture();  // from now on: what is said while the socket opens is kept, and sent once it is open
      if (stale()) return;
      const rtc = this.model.get("transport") !== "websocket" && this.env.RTCPeerConnection;
      if (!(rtc && await this.openCall(url, key, stale)) && !stale()) await this.openSocket(url, key, stale);
      if (!stale() && (this.ws || this.dc)) this.setState("listening");
    } catch (e) {
      if (stale()) return;
      this.teardown();
      this.showError(String(e.message || e));
      this.setState("off");
      this.sync({running: false});
    }
  }

  openSocket(url, key, stale) {
    return new Promise((resolve, reject) => {
      const ws = new this.env.WebSocket(url, key ? ["realtime", KEY_PROTOCOL + key] : ["realtime"]);
      let open = false;
      ws.onopen = () => {
        open = true;
        if (stale()) { ws.close(1000, "stopped by the user"); return resolve(); }
        this.ws = ws; this.via = "websocket"; this.sync({via: "websocket"}); this.send({type: "session.update", session: this.model.get("session")});
        for (const [pcm, t] of this.early) this.append(pcm, t);
        this.early = []; resolve(); };
      ws.onmessage = m => { try { this.onEvent(JSON.parse(m.data)); } catch (e) { console.error("voice_agent realtime panel:", e); } };
      ws.onclose = e => {
        if (!open) return reject(new Error(closeMessage(e.code, e.reason, url)));
        if (this.ws !== ws) return;  // stopped on purpose
        this.ws = null; this.teardown();
        this.showError(closeMessage(e.code, e.reason, url)); this.setState("off"); this.sync({running: false});
      };
    });
  }

  async openCall(url, key, stale) { // true: the call is up (or Stop was pressed); false: the server has no WebRTC
    const pc = this.pc = new this.env.RTCPeerConnection();
    for (const t of this.stream.getAudioTracks()) pc.addTrack(t, this.stream);
    const dc = pc.createDataChannel("oai-events");
    pc.ontrack = e => {  // the reply, played by an audio element: the browser knows it plays it, and cancels its echo
      const a = this.player = new this.env.Audio(); a.autoplay = true;
      a.srcObject = (e.streams && e.streams[0]) || new this.env.MediaStream([e.track]);
      const p = a.play(); if (p && p.catch) p.catch(() => {});
    };
    const fail = text => { pc.close(); if (this.pc === pc) this.pc = null; if (text) throw new Error(text); return false; };
    await pc.setLocalDescription(await pc.createOffer());
    await iceGathered(pc, 3000);
    const target = callsUrl(url);
    let r;
    try {
      r = await this.env.fetch(target, {method: "POST", body: pc.localDescription.sdp,
                                        headers: {"Content-Type": "application/sdp", ...(key ? {Authorization: `Bearer ${key}`} : {})}});
    } catch (e) {
      return fail(`could not reach ${target}: check that the model server is running, that this browser can reach that address ` +
                  "(a remote kernel's localhost is not yours: tunnel the port or use the server's public URL), and that the page may call it " +
                  "(MODEL_SERVER_ALLOWED_ORIGINS)");
    }
    if ([404, 405, 501].includes(r.status)) return fail(null);  // a server without WebRTC: the WebSocket
    if (r.status !== 201) {
      let why = r.statusText; try { why = ((await r.json()).error || {}).message || why; } catch (e) {}
      return fail(`the server refused the call (${r.status}): ${why}`);
    }
    await pc.setRemoteDescription({type: "answer", sdp: await r.text()});
    if (dc.readyState !== "open") await new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error("the call was answered but its connection did not open within 15 s: something between " +
        "this browser and the server blocks WebRTC (a firewall, a VPN): use RealtimePanel(..., transport='websocket')")), 15000);
      dc.onopen = () => { clearTimeout(t); resolve(); };
    }).catch(e => fail(e.message));
    if (stale()) return fail(null) || true;
    this.dc = dc; this.callT0 = performance.now(); this.via = "webrtc"; this.sync({via: "webrtc"});
    dc.onmessage = m => { try { this.onEvent(JSON.parse(m.data)); } catch (e) { console.error("voice_agent realtime panel:", e); } };
    dc.onclose = () => {
      if (this.dc !== dc) return;  // stopped on purpose
      this.dc = null; this.teardown();
      this.showError("the call ended: the server closed it, or the connection dropped"); this.setState("off"); this.sync({running: false});
    };
    pc.onconnectionstatechange = () => { if (pc.connectionState === "failed" && dc.onclose) dc.onclose(); };
    this.send({type: "session.update", session: this.model.get("session")});
    return true;
  }

  async capture() {
    const ctx = this.ctx, src = ctx.createMediaStreamSource(this.stream), mute = ctx.createGain();
    this.down = new Downsampler(ctx.sampleRate);
    mute.gain.value = 0; mute.connect(ctx.destination);
    const onFrame = x => {
      let s = 0; for (let i = 0; i < x.length; i++) s += x[i]*x[i];
      this.level = Math.sqrt(s/Math.max(1, x.length)); for (const v of this.views) v(true);
      const pcm = this.down.push(x);
      if (!pcm.length || this.dc || this.pc) return;  // over WebRTC the microphone's track carries the audio
      if (this.ws) this.append(pcm, performance.now());
      else if (this.early.length < 5/FRAME_S) this.early.push([pcm, performance.now()]);  // at most 5 s, while connecting
    };
    let node;
    if (ctx.audioWorklet) {
      const blob = URL.createObjectURL(new Blob([WORKLET], {type: "application/javascript"}));
      try { await ctx.audioWorklet.addModule(blob); } finally { URL.revokeObjectURL(blob); }
      node = new AudioWorkletNode(ctx, "va-capture");
      node.port.onmessage = m => onFrame(m.data);
    } else {  // browsers without AudioWorklet
      node = ctx.createScriptProcessor(2048, 1, 1);
      node.onaudioprocess = e => onFrame(new Float32Array(e.inputBuffer.getChannelData(0)));
    }
    src.connect(node); node.connect(mute);
    this.nodes = [src, node, mute];
  }

  append(pcm, t) { // send 20 ms of microphone audio, captured at `t`
    this.send({type: "input_audio_buffer.append", audio: toBase64(pcm)});
    this.sentMs += pcm.length*1000/RATE; this.sent.push([this.sentMs, t]);
    if (this.sent.length > 1500) this.sent.shift();
  }

  stop() {
    this.gen++;
    const ws = this.ws; this.ws = null; this.dc = null;
    if (ws) ws.close(1000, "stopped by the user");
    this.teardown(); this.setState("off");
  }

  teardown() {
    this.stopPlayback();
    const pc = this.pc; this.pc = null; this.dc = null; this.playing = false;
    if (pc) pc.close();
    if (this.player) { this.player.srcObject = null; this.player = null; }
    for (const n of this.nodes) { try { n.disconnect(); } catch (e) {} }
    this.nodes = [];
    if (this.stream) for (const t of this.stream.getTracks()) t.stop();
    this.stream = null;
    if (this.ctx) this.ctx.close().catch(() => {});
    this.ctx = null; this.level = 0; this.speech = false; this.early = [];
  }

  // the reply's audio, played as it streams: each delta is scheduled right after the one before
  play(e) {
    if (!this.ctx) return;
    const x = fromBase64(e.delta);
    if (!x.length) return;
    const buf = this.ctx.createBuffer(1, x.length, RATE); buf.copyToChannel(x, 0);
    const src = this.ctx.createBufferSource(); src.buffer = buf; src.connect(this.ctx.destination);
    if (this.playItem !== e.item_id) { this.playItem = e.item_id; this.chunks = []; }
    const at = Math.max(this.ctx.currentTime + LEAD_S, this.playEnd);
    src.start(at); this.playEnd = at + buf.duration;
    this.chunks.push([at, buf.duration]); this.sources.add(src);
    src.onended = () => { this.sources.delete(src); if (!this.sources.size && !this.response) this.setState(this.ws || this.dc ? "listening" : "off"); };
    const entry = this.entry(e.item_id, "assistant");
    if (entry.latency_ms === null && this.stoppedAt !== null) {
      entry.latency_ms = Math.round(performance.now() - this.stoppedAt + (at - this.ctx.currentTime)*1000); this.syncTranscript();
    }
    this.setState("speaking");
  }
  speechEnd(ms) { // when the user stopped speaking, by this page's clock: the append that held the stream's `ms`
    if (this.dc && typeof ms === "number") return this.callT0 + ms;  // WebRTC: the track's audio, counted from the call's start
    const hit = typeof ms === "number" ? this.sent.find(([end]) => end >= ms) : null;
    return hit ? hit[1] - (hit[0] - ms) : performance.now();
  }
  playedMs() { // how much of the current reply's audio the user has heard
    const now = this.ctx ? this.ctx.currentTime : 0;
    return this.chunks.reduce((ms, [at, d]) => ms + Math.max(0, Math.min(d, now - at))*1000, 0);
  }
  stopPlayback() {
    for (const s of this.sources) { s.onended = null; try { s.stop(); } catch (e) {} }
    this.sources.clear(); this.playEnd = 0;
  }

  // barge-in: the user spoke over the reply: silence it at once, and tell the server how much was heard
  bargeIn() {
    if (this.response) this.dropped.add(this.response);  // its deltas still on the way are not played
    if (this.dc) {  // WebRTC: the server stops its track and truncates the item to what the track played
      const entry = this.playing && this.byItem.get(this.playItem);
      if (entry) { entry.interrupted = true; this.syncTranscript(); }
      return;
    }
    if (!this.sources.size) return;
    const ms = Math.floor(this.playedMs()), item = this.playItem;
    this.stopPlayback();
    const entry = this.byItem.get(item);
    if (entry) { entry.interrupted = true; this.syncTranscript(); }
    const id = "va_truncate_" + Math.random().toString(36).slice(2);
    this.quiet.add(id);  // the server may have truncated it already: its answer to this one is not the user's business
    this.send({type: "conversation.item.truncate", event_id: id, item_id: item, content_index: 0, audio_end_ms: ms});
  }

  onEvent(e) {
    switch (e.type) {
      case "input_audio_buffer.speech_started":
        this.speech = true; this.bargeIn(); this.setState("listening"); break;
      case "input_audio_buffer.speech_stopped":
        this.speech = false; this.stoppedAt = this.speechEnd(e.audio_end_ms); this.setState("thinking"); break;
      case "conversation.item.added":
      case "conversation.item.done": {
        const it = e.item || {};
        if (it.role !== "user") break;
        const en = this.entry(it.id, "user"), c = (it.content || []).find(c => c.type === "input_text");
        if (c) { en.text = c.text; en.done = true; }
        this.syncTranscript(); break;
      }
      case "conversation.item.input_audio_transcription.delta": {  // live: the words so far, while the user still speaks
        const en = this.entry(e.item_id, "user"); if (!en.done) { en.text += e.delta || ""; this.syncTranscript(); } break;
      }
      case "conversation.item.input_audio_transcription.completed": {
        const en = this.entry(e.item_id, "user"); en.text = e.transcript; en.done = true; this.syncTranscript(); break;
      }
      case "conversation.item.input_audio_transcription.failed": {
        const en = this.entry(e.item_id, "user"); en.text = `(not transcribed: ${(e.error || {}).message || "unknown error"})`;
        en.done = true; this.syncTranscript(); break;
      }
      case "response.created":
        this.response = e.response.id; if (this.state !== "speaking") this.setState("thinking"); break;
      case "response.output_audio_transcript.delta":
      case "response.output_text.delta":
        if (this.dropped.has(e.response_id)) break;
        if (this.dc) this.playItem = e.item_id;
        this.entry(e.item_id, "assistant").text += e.delta; this.syncTranscript(); break;
      case "response.output_audio.delta":
        if (!this.dropped.has(e.response_id)) this.play(e); break;
      case "output_audio_buffer.started": {  // WebRTC: the server's track plays a reply
        this.playing = true;
        const entry = this.byItem.get(this.playItem);
        if (entry && entry.latency_ms === null && this.stoppedAt !== null) { entry.latency_ms = Math.round(performance.now() - this.stoppedAt); this.syncTranscript(); }
        this.setState("speaking"); break;
      }
      case "output_audio_buffer.stopped":
      case "output_audio_buffer.cleared":
        this.playing = false; if (!this.response && this.state !== "off") this.setState("listening"); break;
      case "response.done": {
        const r = e.response || {};
        for (const it of r.output || []) { const en = this.byItem.get(it.id); if (en) { en.done = true; if (r.status !== "completed") en.interrupted = true; } }
        if (r.status === "failed") this.showError(`the reply failed: ${JSON.stringify((r.status_details || {}).error || r.status_details)}`);
        if (this.response === r.id) this.response = null;
        this.syncTranscript();
        if (!this.sources.size && !this.playing && this.state !== "off") this.setState(this.ws || this.dc ? "listening" : "off");
        break;
      }
      case "error": {
        const err = e.error || {};
        if (err.event_id && this.quiet.has(err.event_id)) { console.debug("voice_agent realtime panel:", err.message); break; }
        this.showError(`${err.code || err.type || "error"}: ${err.message}`); break;
      }
    }
  }
}

const registry = (globalThis.__voice_agent_realtime ??= new Map());
function conversation(model) {
  const key = model.get("_key");
  if (!registry.has(key)) {
    const c = new Conversation(model);
    registry.set(key, c);
    model.on("change:running", () => model.get("running") ? c.start() : c.stop());
  }
  return registry.get(key);
}

function initialize({ model }) {
  const c = conversation(model);
  if (model.get("running") && !c.ws && !c.dc) { model.set("running", false); model.save_changes(); }  // a reloaded page has no microphone open
}

const LABELS = {off: "off", connecting: "connecting…", listening: "listening", thinking: "thinking", speaking: "speaking"};

function render({ model, el }) {
  const c = conversation(model);
  const h = (tag, cls, text) => { const x = document.createElement(tag); if (cls) x.className = cls; if (text) x.textContent = text; return x; };
  const root = h("div", "va-realtime"), head = h("div", "va-rt-head"), bar = h("div", "va-rt-controls");
  const button = h("button", "va-rt-toggle jupyter-button"), state = h("span", "va-rt-state"), dot = h("span", "va-rt-dot"),
        label = h("span", "va-rt-label"), meter = h("span", "va-rt-meter"), level = h("span", "va-rt-level"),
        error = h("div", "va-rt-error"), transcript = h("div", "va-rt-transcript");
  head.append(h("b", null, "voice_agent realtime"), h("span", "va-rt-url"));
  state.append(dot, label); meter.append(level); bar.append(button, state, meter);
  root.append(head, bar, error, transcript); el.append(root);
  button.addEventListener("click", () => { model.set("running", !model.get("running")); model.save_changes(); });
  const update = (levelOnly) => {
    level.style.width = `${Math.min(100, Math.round(Math.sqrt(c.level)*140))}%`;
    if (levelOnly === true) return;
    const url = c.via === "webrtc" ? callsUrl(model.get("url")) : model.get("url");  // where the panel talks to: the call's URL over WebRTC
    head.lastChild.textContent = ` · ${url}${c.via ? ` (${c.via === "webrtc" ? "WebRTC" : "WebSocket"})` : ""}`;
    const on = c.state !== "off";
    button.textContent = on ? "■ Stop" : "● Start"; button.title = on ? "Stop: close the microphone and end the conversation"
      : "Start a conversation: the browser asks for the microphone the first time";
    state.dataset.state = c.state; label.textContent = LABELS[c.state] || c.state;
    error.textContent = c.errorText; error.style.display = c.errorText ? "" : "none";
    transcript.replaceChildren(...(c.entries.length ? c.entries.map(e => {
      const row = h("div", `va-rt-turn va-rt-${e.role}${e.role === "user" && !e.done ? " va-rt-partial" : ""}`);  // partial: still being heard
      row.append(h("b", null, e.role === "user" ? "You: " : "Assistant: "), h("span", "va-rt-text", e.done ? e.text : `${e.text.trim()}…`));
      if (e.interrupted) row.append(h("span", "va-rt-note", " (interrupted)"));
      if (e.latency_ms !== null) row.append(h("span", "va-rt-note", ` · first sound ${(e.latency_ms/1000).toFixed(2)} s after you stopped`));
      return row;
    }) : [h("i", "va-rt-empty", on ? "Speak: the transcript appears here." : "Press Start and speak.")]));
  };
  c.views.add(update); update();
  model.on("change:url", update);
  return () => { c.views.delete(update); model.off("change:url", update); };
}

export default { initialize, render };
