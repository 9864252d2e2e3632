// One WebSocket to the server, reopened with backoff when it drops.
// Server events come out parsed; in pcm16 mode a `tts_chunk` announcement
// and the binary frame that follows it come out as one event with `pcm`.

const BACKOFF_MS = [500, 1000, 2000, 4000, 8000];

export class Connection {
  /**
   * @param {string} url
   * @param {{onOpen: () => void, onEvent: (event: object) => void,
   *          onClose: (info: {code: number, reason: string, retryInMs: number, wasOpen: boolean}) => void,
   *          onProblem: (text: string) => void}} handlers
   */
  constructor(url, handlers) {
    this.url = url;
    this.handlers = handlers;
    this.socket = null;
    this.attempt = 0;
    this.timer = null;
    this.announced = null; // pcm16 tts_chunk waiting for its binary frame
    this.closing = false;
  }

  get isOpen() {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  connect() {
    clearTimeout(this.timer);
    this.timer = null;
    const socket = new WebSocket(this.url);
    socket.binaryType = "arraybuffer";
    let wasOpen = false;
    socket.onopen = () => {
      wasOpen = true;
      this.attempt = 0;
      this.handlers.onOpen();
    };
    socket.onmessage = (message) => this.#frame(message.data);
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.announced = null;
      if (this.closing) return;
      const base = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
      const retryInMs = Math.round(base * (0.8 + 0.4 * Math.random()));
      this.attempt++;
      this.timer = setTimeout(() => this.connect(), retryInMs);
      this.handlers.onClose({ code: event.code, reason: event.reason, retryInMs, wasOpen });
    };
    this.socket = socket;
  }

  /** Drops the socket now (as if the network had); reconnects with backoff. */
  drop(code = 4000, reason = "") {
    this.socket?.close(code, reason);
  }

  /** Closes for good: no reconnect. */
  close() {
    this.closing = true;
    clearTimeout(this.timer);
    this.socket?.close(1000);
  }

  send(message) {
    if (!this.isOpen) return false;
    this.socket.send(JSON.stringify(message));
    return true;
  }

  sendAudio(pcm) {
    if (!this.isOpen) return false;
    this.socket.send(pcm);
    return true;
  }

  #frame(data) {
    if (typeof data !== "string") {
      const announced = this.announced;
      this.announced = null;
      if (!announced || data.byteLength !== announced.bytes) {
        this.#broken(
          announced
            ? `audio frame of ${data.byteLength} bytes, ${announced.bytes} announced`
            : "audio frame without an announcement",
        );
        return;
      }
      this.handlers.onEvent({ ...announced, pcm: data });
      return;
    }
    if (this.announced) {
      this.#broken("text frame where an audio frame was announced");
      return;
    }
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      this.#broken("a message that is not JSON");
      return;
    }
    if (event?.type === "tts_chunk" && event.format === "pcm16") {
      this.announced = event;
      return;
    }
    this.handlers.onEvent(event);
  }

  #broken(what) {
    this.handlers.onProblem(`The server sent ${what}; reconnecting.`);
    this.drop(4002, "protocol error");
  }
}
