// Everything the page shows, and nothing else: the app tells the view what
// happened; the view owns the DOM.

const $ = (id) => document.getElementById(id);

const STATUS_TEXT = {
  connecting: "Connecting…",
  ready: "Connected",
  starting: "Opening microphone…",
  listening: "Connected · listening",
  reconnecting: "Reconnecting…",
};

const ACTIVITY_TEXT = {
  idle: "Press Start, or hold Space, and ask something.",
  listening: "Listening…",
  transcribing: "Transcribing…",
  thinking: "Thinking…",
  speaking: "Speaking…",
};

const TURN_TAGS = {
  thinking: "thinking",
  replying: "replying",
  done: "",
  transcribed: "",
  cancelled: "cancelled",
  interrupted: "interrupted",
  failed: "no reply",
  lost: "connection lost",
};

const MAX_LOG = 200;
const MAX_LATENCY_ROWS = 8;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function ms(value, pending = false) {
  if (value === null || value === undefined) return pending ? "…" : "–";
  return `${Math.round(value)}`;
}

export class View {
  constructor() {
    this.turnNodes = new Map();
    this.level = 0;
  }

  setMode(lean) {
    document.body.dataset.mode = lean ? "lean" : "full";
    $("mode").textContent = lean ? "Transcription only" : "Voice assistant";
    $("mode").title = lean
      ? "The server runs in lean mode: it transcribes, it does not answer."
      : "Transcripts, a written reply and its speech.";
  }

  setStatus(state, detail) {
    const status = $("status");
    status.dataset.state = state;
    status.textContent = detail ?? STATUS_TEXT[state] ?? state;
    document.body.dataset.state = state;
  }

  setActivity(activity) {
    const node = $("activity");
    node.dataset.activity = activity;
    const lean = document.body.dataset.mode === "lean";
    node.textContent =
      activity === "idle" && lean ? "Press Start, or hold Space, and speak." : ACTIVITY_TEXT[activity] ?? activity;
  }

  setButtons({ canStart, canStop, canCancel, listening }) {
    $("start").disabled = !canStart;
    $("stop").disabled = !canStop;
    $("cancel").disabled = !canCancel;
    $("start").setAttribute("aria-pressed", listening ? "true" : "false");
    $("start").querySelector("span").textContent = listening ? "Listening" : "Start";
    document.body.classList.toggle("listening", listening);
  }

  /** rms: 0..1 of full scale; shown on a -60..0 dBFS scale with a quick decay. */
  setLevel(rms) {
    const db = 20 * Math.log10(Math.max(rms, 1e-6));
    const target = Math.min(1, Math.max(0, (db + 60) / 60));
    this.level = target > this.level ? target : this.level * 0.8 + target * 0.2;
    $("level").style.transform = `scaleX(${this.level.toFixed(3)})`;
  }

  setMicLive(live) {
    $("meter").dataset.live = live ? "true" : "false";
    if (!live) {
      this.level = 0;
      $("level").style.transform = "scaleX(0)";
    }
  }

  showPartial(text) {
    const partial = $("partial");
    partial.textContent = text;
    partial.hidden = !text;
    if (text) $("final").classList.add("stale");
  }

  showFinal(text) {
    this.showPartial("");
    const final = $("final");
    final.textContent = text;
    final.classList.remove("stale");
  }

  showReply(text, streaming) {
    const reply = $("reply");
    reply.textContent = text;
    reply.classList.toggle("streaming", streaming);
  }

  /** Adds or refreshes one turn of the conversation. */
  renderTurn(turn) {
    let nodes = this.turnNodes.get(turn);
    if (!nodes) {
      $("turns-empty").hidden = true;
      const item = el("li", "turn");
      const user = el("div", "bubble user");
      const userText = el("p", "text");
      user.append(el("span", "who", "You"), userText);
      const assistant = el("div", "bubble assistant");
      const replyText = el("p", "text");
      const tag = el("span", "tag");
      assistant.append(el("span", "who", "Assistant"), replyText, tag);
      item.append(user, assistant);
      $("turns").append(item);
      nodes = { item, userText, assistant, replyText, tag };
      this.turnNodes.set(turn, nodes);
    }
    nodes.userText.textContent = turn.user || "…";
    nodes.replyText.textContent = turn.reply;
    nodes.assistant.hidden = document.body.dataset.mode === "lean";
    nodes.assistant.classList.toggle("pending", !turn.reply);
    nodes.item.dataset.status = turn.status;
    const tag = TURN_TAGS[turn.status] ?? turn.status;
    nodes.tag.textContent = turn.playbackStopped && !tag ? "stopped" : tag;
    nodes.tag.hidden = !nodes.tag.textContent;
    nodes.item.scrollIntoView?.({ block: "nearest" });
  }

  renderLatency(turns) {
    const body = $("latency-rows");
    body.replaceChildren();
    const recent = turns.slice(-MAX_LATENCY_ROWS).reverse();
    $("latency-empty").hidden = recent.length > 0;
    for (const turn of recent) {
      const row = el("tr");
      row.append(el("th", "turn-no", `#${turn.n}`));
      const pairs = [
        [turn.client.final_ms, turn.server.final_ms, ""],
        [turn.client.first_token_ms, turn.server.first_token_ms, "reply-only"],
        [turn.client.first_audio_ms, turn.server.first_audio_ms, "reply-only"],
        [turn.client.heard_ms, undefined, "reply-only"],
      ];
      for (const [client, server, className] of pairs) {
        const cell = el("td", className);
        cell.append(el("span", "client", ms(client, !turn.done)));
        if (server !== undefined) cell.append(el("span", "server", ms(server, !turn.metrics && !turn.done)));
        row.append(cell);
      }
      body.append(row);
    }
  }

  log(level, text) {
    const list = $("log");
    const item = el("li", `entry ${level}`);
    const time = new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    item.append(el("time", "", time), el("span", "msg", text));
    list.prepend(item);
    while (list.children.length > MAX_LOG) list.lastElementChild.remove();
    if (level === "error" || level === "fatal") this.toast(text);
  }

  toast(text) {
    const toast = $("toast");
    toast.textContent = text;
    toast.hidden = false;
    clearTimeout(this.toastTimer);
    this.toastTimer = setTimeout(() => (toast.hidden = true), 6000);
  }
}
