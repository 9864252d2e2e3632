// Reply speech on one Web Audio timeline: every chunk starts exactly where
// the previous one ends (no gap, no overlap), phrases in `seq` order.
// stop() silences everything at once and drops what is queued.

const LEAD_S = 0.04; // head room before the first chunk after silence

/** Parses a RIFF/WAVE file of 16-bit PCM; returns mono float samples. */
export function decodeWav(buffer) {
  const view = new DataView(buffer);
  const tag = (offset) =>
    String.fromCharCode(view.getUint8(offset), view.getUint8(offset + 1), view.getUint8(offset + 2), view.getUint8(offset + 3));
  if (buffer.byteLength < 12 || tag(0) !== "RIFF" || tag(8) !== "WAVE") throw new Error("not a WAV file");
  let format = null;
  let offset = 12;
  while (offset + 8 <= buffer.byteLength) {
    const id = tag(offset);
    const size = view.getUint32(offset + 4, true);
    const body = offset + 8;
    if (id === "fmt ") {
      format = {
        code: view.getUint16(body, true),
        channels: view.getUint16(body + 2, true),
        sampleRate: view.getUint32(body + 4, true),
        bits: view.getUint16(body + 14, true),
      };
    } else if (id === "data") {
      if (!format) throw new Error("WAV data before its format");
      if ((format.code !== 1 && format.code !== 0xfffe) || format.bits !== 16) {
        throw new Error(`unsupported WAV encoding (format ${format.code}, ${format.bits} bits)`);
      }
      const length = Math.min(size, buffer.byteLength - body);
      return { samples: pcm16ToFloat(buffer, body, length, format.channels), sampleRate: format.sampleRate };
    }
    offset = body + size + (size % 2);
  }
  throw new Error("WAV file without data");
}

/** Little-endian 16-bit PCM (interleaved channels) to mono float samples. */
export function pcm16ToFloat(buffer, byteOffset = 0, byteLength = buffer.byteLength, channels = 1) {
  const view = new DataView(buffer, byteOffset, byteLength);
  const frames = Math.floor(byteLength / (2 * channels));
  const out = new Float32Array(frames);
  for (let i = 0; i < frames; i++) {
    let sum = 0;
    for (let c = 0; c < channels; c++) sum += view.getInt16((i * channels + c) * 2, true);
    out[i] = sum / channels / 32768;
  }
  return out;
}

export class Player {
  /**
   * @param {() => AudioContext | null} getContext
   * @param {{onStart?: (chunk: object) => void, onChange?: () => void}} hooks
   */
  constructor(getContext, { onStart, onChange } = {}) {
    this.getContext = getContext;
    this.onStart = onStart ?? (() => {});
    this.onChange = onChange ?? (() => {});
    this.active = new Set(); // chunks scheduled and not yet ended
    this.pending = new Map(); // seq -> chunks waiting for earlier phrases
    this.nextSeq = 1;
    this.endTime = 0;
    this.output = null;
    this.received = 0;
    this.played = 0;
    // The last chunks scheduled, on the audio clock: {seq, at, end, queuedAt}.
    // A chunk queued before the previous one ended starts exactly at its end.
    this.history = [];
  }

  get playing() {
    return this.active.size > 0;
  }

  get queued() {
    let n = this.active.size;
    for (const list of this.pending.values()) n += list.length;
    return n;
  }

  /** A new turn numbers its phrases from 1 again; the timeline goes on. */
  newTurn() {
    this.#drainAll();
    this.nextSeq = 1;
  }

  push(seq, samples, sampleRate, meta = {}) {
    this.received++;
    const chunk = { seq, samples, sampleRate, ...meta };
    if (seq <= this.nextSeq) this.#schedule(chunk);
    else {
      if (!this.pending.has(seq)) this.pending.set(seq, []);
      this.pending.get(seq).push(chunk);
    }
    this.onChange();
  }

  /** Phrase `seq` is complete (or was skipped): later phrases may play. */
  phraseDone(seq) {
    if (seq < this.nextSeq) return;
    this.nextSeq = seq + 1;
    for (const [s, list] of [...this.pending].sort((a, b) => a[0] - b[0])) {
      if (s > this.nextSeq) break;
      this.pending.delete(s);
      for (const chunk of list) this.#schedule(chunk);
    }
    this.onChange();
  }

  /** The reply is fully sent: play whatever still waits, in seq order. */
  complete() {
    this.#drainAll();
    this.onChange();
  }

  /** Silence now and forget everything queued. */
  stop() {
    for (const chunk of this.active) {
      chunk.source.onended = null;
      clearTimeout(chunk.timer);
      try {
        chunk.source.stop();
      } catch {
        // never started: nothing to stop
      }
      chunk.source.disconnect();
    }
    this.active.clear();
    this.pending.clear();
    this.output?.disconnect();
    this.output = null;
    this.endTime = 0;
    this.onChange();
  }

  #drainAll() {
    const waiting = [...this.pending].sort((a, b) => a[0] - b[0]);
    this.pending.clear();
    for (const [, list] of waiting) for (const chunk of list) this.#schedule(chunk);
  }

  #schedule(chunk) {
    const context = this.getContext();
    if (!context || chunk.samples.length === 0) return;
    if (!this.output) {
      this.output = context.createGain();
      this.output.connect(context.destination);
    }
    const buffer = context.createBuffer(1, chunk.samples.length, chunk.sampleRate);
    buffer.copyToChannel(chunk.samples, 0);
    const source = context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.output);
    const at = Math.max(this.endTime, context.currentTime + LEAD_S);
    source.start(at);
    this.endTime = at + buffer.duration;
    this.history.push({ seq: chunk.seq, at, end: this.endTime, queuedAt: context.currentTime });
    if (this.history.length > 100) this.history.shift();
    Object.assign(chunk, { source, at, started: false });
    this.active.add(chunk);
    source.onended = () => {
      clearTimeout(chunk.timer);
      this.#started(chunk);
      this.active.delete(chunk);
      source.disconnect();
      this.onChange();
    };
    this.#watchStart(chunk, context);
  }

  // Counts a chunk as played once the audio clock has reached its start.
  #watchStart(chunk, context) {
    const wait = (chunk.at - context.currentTime) * 1000;
    if (wait <= 0) {
      this.#started(chunk);
      return;
    }
    chunk.timer = setTimeout(() => {
      if (this.active.has(chunk)) this.#watchStart(chunk, context);
    }, Math.max(5, wait));
  }

  #started(chunk) {
    if (chunk.started) return;
    chunk.started = true;
    this.played++;
    this.onStart(chunk);
    this.onChange();
  }
}
