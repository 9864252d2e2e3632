// The voicetrio page: microphone -> server -> transcripts, reply, speech.
//
// State a script (or a test) can read: window.voicetrio, kept up to date in
// place. It also has start(), stop() and cancel(), the same as the buttons.

import { CAPTURE_RATE, Microphone, microphoneProblem } from "./capture.js";
import { Connection } from "./connection.js";
import { describeClose, describeError, describeInfo } from "./messages.js";
import { Player, decodeWav, pcm16ToFloat } from "./player.js";
import { View } from "./view.js";

const params = new URLSearchParams(location.search);
// Reply audio: binary pcm16 by default (no base64); ?audio=wav for base64 WAV.
const AUDIO_FORMAT = params.get("audio") === "wav" ? "wav" : "pcm16";
// The page's own rough speech detector (about -45 dBFS), only to start the
// client's latency clock at the start of speech, as the server's t0 is.
const SPEECH_RMS = 10 ** (-45 / 20);

const view = new View();
let context = null; // AudioContext, made on the first Start (a user gesture)
let mic = null;
let startingPromise = null;
let stopAfterStart = false;
let pushToTalk = false;
let speechStartedAt = null; // performance.now() of this utterance's first loud frame
let activeTurn = null; // the turn between its final transcript and its end
let dropReplyAudio = false; // after Cancel, until the server confirms
let everConnected = false;
let finalsThisStream = 0;

const store = {
  state: "connecting", // connecting | ready | starting | listening | reconnecting
  connected: false,
  streaming: false,
  mode: null, // "full" | "lean", from /api/stream_config, then each `protocol`
  lean: false,
  audioFormat: AUDIO_FORMAT,
  sessionId: null,
  activity: "idle", // idle | listening | thinking | speaking
  partial: "", // the live partial transcript
  partials: 0, // partial transcripts received
  turns: [],
  chunksReceived: 0,
  chunksPlayed: 0,
  playing: false,
  queued: 0,
  framesSent: 0,
  inputRate: null, // the AudioContext's rate, which the worklet resamples to 16 kHz
  reconnects: 0,
  schedule: [], // reply chunks on the audio clock (see Player.history)
  silenced: [], // each time reply audio was cut: {reason, wasPlaying, dropped}
  errors: [], // {code, reason, text} of every `error` event
  notices: [], // `event` of every `info` event
  start: () => start(),
  stop: () => stop(),
  cancel: () => cancel(),
};
window.voicetrio = store;

const player = new Player(() => context, {
  onStart: (chunk) => {
    const turn = chunk.turn;
    if (turn && turn.client.heard_ms === null && turn.t0 !== null) {
      turn.client.heard_ms = performance.now() - turn.t0;
      view.renderLatency(store.turns);
    }
  },
  onChange: () => {
    store.chunksPlayed = player.played;
    store.playing = player.playing;
    store.queued = player.queued;
    refresh();
  },
});

store.schedule = player.history;

const connection = new Connection(socketUrl(), {
  onOpen: () => {
    store.connected = true;
    setState("ready");
    view.log("ok", everConnected ? "Reconnected to the server." : "Connected to the server.");
    everConnected = true;
  },
  onEvent: (event) => handle(event),
  onClose: ({ code, retryInMs, wasOpen }) => {
    const wasStreaming = store.streaming;
    store.connected = false;
    store.streaming = false;
    store.sessionId = null;
    if (wasOpen) {
      store.reconnects++;
      silence("disconnected");
    }
    dropReplyAudio = false;
    if (activeTurn) endTurn(activeTurn, "lost");
    view.showPartial("");
    const seconds = Math.max(1, Math.round(retryInMs / 1000));
    const why = wasOpen ? describeClose(code) : "The server cannot be reached.";
    setState("reconnecting", `${why.replace(/\.$/, "")} · retrying in ${seconds} s`);
    if (wasOpen) view.log("error", `${why} Reconnecting…${wasStreaming ? " Press Start to talk again." : ""}`);
  },
  onProblem: (text) => view.log("error", text),
});

// ---------------------------------------------------------------- server events

function handle(event) {
  switch (event.type) {
    case "protocol":
      store.sessionId = event.session_id;
      setMode(event.mode === "lean");
      if (store.state === "starting" || store.streaming) setState("listening");
      break;
    case "partial_transcript":
      store.partial = event.text;
      store.partials++;
      view.showPartial(event.text);
      break;
    case "final_transcript":
      finalTranscript(event);
      break;
    case "llm_token":
      token(event);
      break;
    case "tts_chunk":
      speech(event);
      break;
    case "tts_phrase_done":
      if (!dropReplyAudio) player.phraseDone(event.seq);
      break;
    case "tts_complete":
      if (!dropReplyAudio) player.complete();
      break;
    case "metrics":
      metrics(event);
      break;
    case "error":
      serverError(event);
      break;
    case "info":
      serverInfo(event);
      break;
    default:
      break; // new event types may appear; ignore what we do not know
  }
  refresh();
}

function finalTranscript(event) {
  const now = performance.now();
  finalsThisStream++;
  if (activeTurn) endTurn(activeTurn, activeTurn.status === "thinking" ? "failed" : "done");
  dropReplyAudio = false;
  player.newTurn();
  const t0 = speechStartedAt;
  speechStartedAt = null;
  const turn = {
    n: store.turns.length + 1,
    id: event.id,
    user: event.text,
    reply: "",
    status: store.lean ? "transcribed" : "thinking",
    done: false,
    chunks: 0,
    playbackStopped: false,
    t0,
    client: { final_ms: since(t0, now), first_token_ms: null, first_audio_ms: null, heard_ms: null },
    server: { first_partial_ms: null, final_ms: null, first_token_ms: null, first_audio_ms: null },
  };
  store.turns.push(turn);
  store.partial = "";
  activeTurn = turn;
  view.showFinal(event.text);
  view.showReply("", !store.lean);
  view.renderTurn(turn);
  view.renderLatency(store.turns);
}

function token(event) {
  const turn = activeTurn;
  if (!turn) return;
  if (event.done) {
    if (turn.status === "thinking") turn.status = "replying";
    view.showReply(turn.reply, false);
  } else {
    if (turn.client.first_token_ms === null) {
      turn.client.first_token_ms = since(turn.t0);
      view.renderLatency(store.turns);
    }
    turn.status = "replying";
    turn.reply += event.text;
    view.showReply(turn.reply, true);
  }
  view.renderTurn(turn);
}

function speech(event) {
  store.chunksReceived++;
  const turn = activeTurn;
  if (turn && turn.client.first_audio_ms === null) {
    turn.client.first_audio_ms = since(turn.t0);
    view.renderLatency(store.turns);
  }
  if (dropReplyAudio) return;
  let audio;
  try {
    audio = event.pcm
      ? { samples: pcm16ToFloat(event.pcm), sampleRate: event.sample_rate }
      : decodeWav(base64ToBuffer(event.audio_b64));
  } catch (error) {
    view.log("warn", `A piece of the reply could not be played (${error.message}).`);
    player.phraseDone(event.seq);
    return;
  }
  if (turn) turn.chunks++;
  player.push(event.seq, audio.samples, audio.sampleRate, { turn });
}

function metrics(event) {
  const turn = store.turns.find((t) => t.id === event.id);
  if (!turn) return;
  Object.assign(turn.server, {
    first_partial_ms: event.t1_first_partial_ms ?? null,
    final_ms: event.t2_final_ms ?? null,
    first_token_ms: event.t3_first_token_ms ?? null,
    first_audio_ms: event.t4_first_audio_ms ?? null,
  });
  turn.metrics = event;
  if (turn === activeTurn) endTurn(turn, store.lean ? "transcribed" : turn.status === "failed" ? "failed" : "done");
  view.renderLatency(store.turns);
}

function serverError(event) {
  const { level, text } = describeError(event);
  remember(store.errors, { code: event.code, reason: event.reason ?? null, text });
  view.log(level, text);
  switch (event.code) {
    case "CANCELLED":
      dropReplyAudio = false;
      silence("cancelled");
      if (activeTurn) endTurn(activeTurn, "cancelled");
      break;
    case "LLM_FAIL":
    case "LLM_TIMEOUT":
      if (activeTurn) {
        activeTurn.status = "failed";
        view.renderTurn(activeTurn);
      }
      break;
    case "UNSUPPORTED_SAMPLE_RATE":
      store.streaming = false;
      setState("ready");
      break;
    default:
      break;
  }
}

function serverInfo(event) {
  remember(store.notices, event.event ?? null);
  // After Stop, "no speech" only matters when nothing at all was heard.
  const quiet = event.event === "no_speech" && finalsThisStream > 0;
  const { level, text } = describeInfo(event);
  if (!quiet) view.log(level, text);
  switch (event.event) {
    case "barge_in":
      silence("barge_in");
      if (activeTurn) endTurn(activeTurn, "interrupted");
      break;
    case "nothing_to_cancel":
      dropReplyAudio = false;
      break;
    case "tts_fail":
      if (typeof event.seq === "number") player.phraseDone(event.seq);
      break;
    default:
      break;
  }
}

function endTurn(turn, status) {
  turn.status = status;
  turn.done = true;
  if (turn === activeTurn) {
    activeTurn = null;
    view.showReply(turn.reply, false);
  }
  view.renderTurn(turn);
}

// ---------------------------------------------------------------- controls

async function start() {
  if (store.streaming || startingPromise || !connection.isOpen) return;
  stopAfterStart = false;
  setState("starting");
  startingPromise = openMicrophone();
  const ok = await startingPromise;
  startingPromise = null;
  if (!ok || !connection.isOpen) {
    if (connection.isOpen) setState("ready");
    return;
  }
  connection.send({ type: "start", sample_rate: CAPTURE_RATE, audio_format: AUDIO_FORMAT });
  store.streaming = true;
  speechStartedAt = null;
  finalsThisStream = 0;
  refresh();
  if (stopAfterStart) await stop();
}

async function openMicrophone() {
  try {
    context ??= new AudioContext();
    if (context.state !== "running") {
      // resume() never settles when the browser has no sound device to run on.
      await Promise.race([context.resume(), new Promise((done) => setTimeout(done, 3000))]);
      if (context.state !== "running") {
        const error = new Error("The browser could not start audio: is a sound output device available?");
        error.name = "AudioUnavailable";
        throw error;
      }
    }
    mic ??= new Microphone(context, { onFrame, onEnded: microphoneEnded });
    if (!mic.open) {
      await mic.start();
      store.inputRate = context.sampleRate;
      view.setMicLive(true);
      view.log("ok", `Microphone on (${Math.round(context.sampleRate / 100) / 10} kHz, sent as 16 kHz).`);
    }
    return true;
  } catch (error) {
    const own = error.name === "InsecureContext" || error.name === "AudioUnavailable";
    view.log("error", own ? error.message : microphoneProblem(error));
    return false;
  }
}

async function stop() {
  if (startingPromise) {
    stopAfterStart = true;
    return;
  }
  if (!store.streaming) return;
  await mic?.flush(); // the last few ms of speech go out before `stop`
  if (!store.streaming) return;
  store.streaming = false;
  connection.send({ type: "stop" });
  if (connection.isOpen) setState("ready");
  refresh();
}

function cancel() {
  const hadAudio = silence("cancel");
  const turn = activeTurn ?? (hadAudio ? store.turns.at(-1) : null);
  if (turn && hadAudio) {
    turn.playbackStopped = true;
    view.renderTurn(turn);
  }
  // Chunks already on the wire belong to the cancelled reply: drop them
  // until the server answers (CANCELLED, or nothing_to_cancel).
  if (connection.send({ type: "cancel" })) dropReplyAudio = true;
  refresh();
}

/** Stops reply audio now and drops the queue; remembers what it cut. */
function silence(reason) {
  const cut = { reason, wasPlaying: player.playing, dropped: player.queued };
  player.stop();
  remember(store.silenced, cut);
  return cut.wasPlaying || cut.dropped > 0;
}

function microphoneEnded() {
  view.setMicLive(false);
  view.log("error", "The microphone stopped (it was unplugged or switched off).");
  if (store.streaming) stop();
}

function onFrame(pcm, rms) {
  view.setLevel(rms);
  if (!store.streaming || !connection.sendAudio(pcm)) return;
  store.framesSent++;
  if (speechStartedAt === null && rms >= SPEECH_RMS) speechStartedAt = performance.now();
}

// ---------------------------------------------------------------- page state

function setState(state, detail) {
  store.state = state;
  view.setStatus(state, detail);
  refresh();
}

function setMode(lean) {
  store.lean = lean;
  store.mode = lean ? "lean" : "full";
  view.setMode(lean);
  refresh();
}

function refresh() {
  const activity = store.streaming
    ? "listening"
    : player.playing
      ? "speaking"
      : activeTurn && !store.lean
        ? "thinking"
        : "idle";
  store.activity = activity;
  view.setActivity(activity === "listening" && player.playing ? "speaking" : activity);
  view.setButtons({
    canStart: store.connected && !store.streaming && store.state !== "starting",
    canStop: store.streaming || store.state === "starting",
    canCancel: store.connected && (activeTurn !== null || player.playing || player.queued > 0),
    listening: store.streaming,
  });
}

/** Appends to one of the store's lists, keeping the latest 200. */
function remember(list, item) {
  list.push(item);
  if (list.length > 200) list.splice(0, list.length - 200);
}

function since(t0, now = performance.now()) {
  return t0 === null ? null : now - t0;
}

function base64ToBuffer(b64) {
  const binary = atob(b64);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes.buffer;
}

// A server started with STREAM_AUTH_TOKENS needs a token: open the page as
// /?token=..., or enter it when asked; it is kept in this browser only.
function accessToken() {
  const fromUrl = new URLSearchParams(location.search).get("token");
  if (fromUrl) {
    localStorage.setItem("voicetrio.token", fromUrl);
    return fromUrl;
  }
  return localStorage.getItem("voicetrio.token") || "";
}

function askForToken() {
  const entered = window.prompt("This voicetrio server needs an access token:");
  if (entered) localStorage.setItem("voicetrio.token", entered.trim());
  return Boolean(entered);
}

function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const token = accessToken();
  // Browsers cannot set headers on a WebSocket: the token goes in the query.
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  return `${scheme}//${location.host}/ws${query}`;
}

// ---------------------------------------------------------------- wiring

function isTyping(target) {
  return target instanceof HTMLElement && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
}

document.getElementById("start").addEventListener("click", () => start());
document.getElementById("stop").addEventListener("click", () => stop());
document.getElementById("cancel").addEventListener("click", () => cancel());

// Push to talk: hold Space. (Space would also press a focused button: not here.)
window.addEventListener("keydown", (event) => {
  if (event.code !== "Space" || isTyping(event.target)) return;
  event.preventDefault();
  if (event.repeat || store.streaming || startingPromise) return;
  pushToTalk = true;
  start();
});
window.addEventListener("keyup", (event) => {
  if (event.code !== "Space" || isTyping(event.target)) return;
  event.preventDefault();
  if (!pushToTalk) return;
  pushToTalk = false;
  stop();
});
window.addEventListener("pagehide", () => {
  connection.close();
  player.stop();
  mic?.close();
});

async function loadConfig() {
  try {
    const token = accessToken();
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    let response = await fetch("/api/stream_config", { cache: "no-store", headers });
    if (response.status === 401 && askForToken()) {
      response = await fetch("/api/stream_config", {
        cache: "no-store",
        headers: { Authorization: `Bearer ${accessToken()}` },
      });
      connection.url = socketUrl();
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const config = await response.json();
    if (store.mode === null) setMode(Boolean(config.lean));
  } catch {
    if (store.mode === null) setMode(false);
  }
}

view.setStatus("connecting");
view.setMicLive(false);
refresh();
loadConfig();
connection.connect();
