// The microphone: getUserMedia -> MediaStreamSource -> the capture worklet,
// which hands back 16 kHz 16-bit mono frames (and their level) as soon as
// each one is full.

export const CAPTURE_RATE = 16000;
const FRAME_MS = 40;

/** A human sentence for a getUserMedia failure. */
export function microphoneProblem(error) {
  switch (error?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Microphone access was blocked. Allow it for this page (the icon in the address bar) and press Start again.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No microphone was found. Plug one in and press Start again.";
    case "NotReadableError":
    case "AbortError":
      return "The microphone is busy or unavailable (another app may be using it).";
    default:
      return `The microphone could not be opened: ${error?.message ?? error}`;
  }
}

export class Microphone {
  /**
   * @param {AudioContext} context
   * @param {{onFrame: (pcm: ArrayBuffer, rms: number) => void, onEnded: () => void}} handlers
   */
  constructor(context, { onFrame, onEnded }) {
    this.context = context;
    this.onFrame = onFrame;
    this.onEnded = onEnded;
    this.stream = null;
    this.node = null;
    this.flushes = new Map();
    this.nextFlush = 1;
  }

  get open() {
    return this.stream !== null;
  }

  async start() {
    if (this.stream) return;
    if (!navigator.mediaDevices?.getUserMedia) {
      const error = new Error("The microphone needs a secure page (https, or http on localhost).");
      error.name = "InsecureContext";
      throw error;
    }
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: {
        channelCount: 1,
        echoCancellation: true, // the assistant's own voice must not barge in
        noiseSuppression: true,
        autoGainControl: true,
      },
    });
    try {
      await this.context.audioWorklet.addModule("/static/capture-worklet.js");
      const source = this.context.createMediaStreamSource(stream);
      const node = new AudioWorkletNode(this.context, "pcm16-capture", {
        numberOfInputs: 1,
        numberOfOutputs: 1,
        outputChannelCount: [1],
        channelCount: 1,
        channelCountMode: "explicit",
        channelInterpretation: "speakers",
        processorOptions: { targetRate: CAPTURE_RATE, frameMs: FRAME_MS },
      });
      node.port.onmessage = (event) => this.#message(event.data);
      // A muted path to the destination keeps the worklet pulled in every browser.
      const mute = this.context.createGain();
      mute.gain.value = 0;
      source.connect(node).connect(mute).connect(this.context.destination);
      for (const track of stream.getAudioTracks()) {
        track.addEventListener("ended", () => {
          this.close();
          this.onEnded();
        });
      }
      this.stream = stream;
      this.node = node;
      this.source = source;
      this.mute = mute;
    } catch (error) {
      for (const track of stream.getTracks()) track.stop();
      throw error;
    }
  }

  /** Resolves once every sample captured so far has been handed to onFrame. */
  flush() {
    if (!this.node) return Promise.resolve();
    const id = this.nextFlush++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.#flushed(id), 250);
      this.flushes.set(id, () => {
        clearTimeout(timer);
        resolve();
      });
      this.node.port.postMessage({ type: "flush", id });
    });
  }

  close() {
    for (const track of this.stream?.getTracks() ?? []) track.stop();
    this.source?.disconnect();
    this.node?.disconnect();
    this.mute?.disconnect();
    if (this.node) this.node.port.onmessage = null;
    this.stream = this.node = this.source = this.mute = null;
    for (const id of [...this.flushes.keys()]) this.#flushed(id);
  }

  #message(data) {
    if (data.type === "frame") this.onFrame(data.pcm, data.rms);
    else if (data.type === "flushed") this.#flushed(data.id);
  }

  #flushed(id) {
    const done = this.flushes.get(id);
    this.flushes.delete(id);
    done?.();
  }
}
