// Server errors and notices in plain words. Programs match on code, reason
// and event (docs/protocol.md); people read these.

const ERRORS = {
  BAD_MESSAGE: "The server refused a message from this page.",
  UNSUPPORTED_SAMPLE_RATE: "The server does not accept this page's audio format.",
  ASR_FAIL: "That could not be transcribed. Please say it again.",
  LLM_TIMEOUT: "The assistant took too long to answer.",
  LLM_FAIL: "The assistant could not answer this time.",
  TTS_FAIL: "Part of the reply could not be spoken.",
  CANCELLED: "Reply cancelled.",
  PROTOCOL_VIOLATION: "The server closed the connection after too many bad messages.",
  INTERNAL: "The server hit an internal error and closed the connection.",
  MODEL_LOAD_FAIL: "The server could not load its speech models.",
};

const REASONS = {
  already_started: "the microphone was already streaming",
  not_started: "the microphone was not streaming",
  audio_before_start: "audio arrived before the stream started",
  frame_too_large: "an audio frame was too large",
  text_too_large: "a message was too large",
};

const INFOS = {
  barge_in: "You spoke over the reply, so it stopped. Listening…",
  nothing_to_cancel: "Nothing to cancel.",
  no_speech: "No speech was heard.",
  shutdown: "The server is shutting down.",
  max_duration: "That was a long one: transcribing what was said so far.",
  backpressure: "The connection is slow; catching up.",
  tts_fail: "Part of the reply could not be spoken.",
};

/** {level, text} for an `error` event. */
export function describeError(event) {
  let text = ERRORS[event.code] ?? event.message ?? "Something went wrong.";
  const reason = REASONS[event.reason];
  if (reason) text = `${text.replace(/\.$/, "")}: ${reason}.`;
  const level = event.code === "CANCELLED" ? "info" : event.recoverable === false ? "fatal" : "error";
  return { level, text };
}

/** {level, text} for an `info` event. */
export function describeInfo(event) {
  const text = INFOS[event.event] ?? event.message ?? "Notice from the server.";
  const level = event.event === "tts_fail" || event.event === "backpressure" ? "warn" : "info";
  return { level, text };
}

/** Why a socket closed, for the status line. */
export function describeClose(code) {
  switch (code) {
    case 1000:
      return "Connection closed.";
    case 1001:
      return "The server went away.";
    case 1008:
      return "The server closed the connection (policy).";
    case 1011:
      return "The server closed the connection after an error.";
    case 1013:
      return "The server is busy.";
    default:
      return "Connection lost.";
  }
}
