// The microphone's AudioWorklet: audio at the context's rate (44.1 or 48 kHz,
// whatever the device runs at) in, 16-bit mono PCM at 16 kHz out, in frames
// of `frameMs` posted to the page as soon as each one is full.
//
// Resampling is a low-pass FIR (windowed sinc, cut below the new Nyquist
// frequency so nothing folds back into the speech band) followed by linear
// interpolation at the output instants. The filter runs on every input
// sample; the interpolation reads the filtered stream across block
// boundaries, so frames join without clicks.

const TARGET_RATE = 16000;

/** Windowed-sinc low-pass taps, normalized to unity gain at DC. */
function lowPass(cutoff, taps) {
  // cutoff in cycles per input sample (0..0.5); taps odd.
  const h = new Float32Array(taps);
  const mid = (taps - 1) / 2;
  let sum = 0;
  for (let n = 0; n < taps; n++) {
    const x = n - mid;
    const sinc = x === 0 ? 2 * cutoff : Math.sin(2 * Math.PI * cutoff * x) / (Math.PI * x);
    const window =
      0.42 - 0.5 * Math.cos((2 * Math.PI * n) / (taps - 1)) + 0.08 * Math.cos((4 * Math.PI * n) / (taps - 1));
    h[n] = sinc * window;
    sum += h[n];
  }
  for (let n = 0; n < taps; n++) h[n] /= sum;
  return h;
}

class Resampler {
  constructor(inRate, outRate) {
    this.step = inRate / outRate; // input samples per output sample
    if (inRate > outRate) {
      // Pass band to ~0.44 of the output rate; ~24 taps per output sample.
      let taps = Math.ceil(this.step * 24);
      if (taps % 2 === 0) taps += 1;
      this.taps = lowPass((0.44 * outRate) / inRate, taps);
    } else {
      this.taps = Float32Array.of(1); // upsampling or same rate: interpolation only
    }
    this.history = new Float32Array(this.taps.length - 1);
    this.work = new Float32Array(0);
    this.filtered = new Float32Array(0);
    this.prev = 0; // last filtered sample of the previous block (index -1)
    this.t = 0; // next output instant, in input samples from this block's start
  }

  /** Feed one block of input; calls emit(sample) for every output sample. */
  process(input, emit) {
    const n = input.length;
    const taps = this.taps;
    const k = taps.length;
    if (this.work.length !== k - 1 + n) {
      this.work = new Float32Array(k - 1 + n);
      this.filtered = new Float32Array(n);
    }
    const work = this.work;
    const y = this.filtered;
    work.set(this.history, 0);
    work.set(input, k - 1);
    for (let j = 0; j < n; j++) {
      let acc = 0;
      for (let i = 0; i < k; i++) acc += taps[i] * work[j + i];
      y[j] = acc;
    }
    this.history.set(work.subarray(n, n + k - 1));

    let t = this.t;
    while (t < n - 1) {
      const i = Math.floor(t);
      const frac = t - i;
      const a = i < 0 ? this.prev : y[i];
      const b = y[i + 1];
      emit(a + (b - a) * frac);
      t += this.step;
    }
    this.t = t - n;
    this.prev = y[n - 1];
  }
}

class Pcm16Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions ?? {};
    this.targetRate = opts.targetRate ?? TARGET_RATE;
    const frameMs = Math.min(100, Math.max(20, opts.frameMs ?? 40));
    this.frameSamples = Math.round((this.targetRate * frameMs) / 1000);
    this.resampler = new Resampler(sampleRate, this.targetRate);
    this.newFrame();
    this.emit = (s) => this.push(s);
    this.port.onmessage = (event) => {
      if (event.data?.type === "flush") {
        this.post(this.fill);
        this.port.postMessage({ type: "flushed", id: event.data.id });
      }
    };
  }

  newFrame() {
    this.frame = new Int16Array(this.frameSamples);
    this.fill = 0;
    this.sumSquares = 0;
    this.peak = 0;
  }

  push(sample) {
    const s = sample > 1 ? 1 : sample < -1 ? -1 : sample;
    this.frame[this.fill++] = s < 0 ? s * 0x8000 : s * 0x7fff;
    this.sumSquares += s * s;
    const mag = s < 0 ? -s : s;
    if (mag > this.peak) this.peak = mag;
    if (this.fill === this.frameSamples) this.post(this.fill);
  }

  post(length) {
    if (length === 0) return;
    const pcm = length === this.frameSamples ? this.frame : this.frame.slice(0, length);
    const rms = Math.sqrt(this.sumSquares / length);
    this.port.postMessage(
      { type: "frame", pcm: pcm.buffer, rms, peak: this.peak, sampleRate: this.targetRate },
      [pcm.buffer],
    );
    this.newFrame();
  }

  process(inputs) {
    const channel = inputs[0]?.[0];
    if (channel) this.resampler.process(channel, this.emit);
    return true;
  }
}

registerProcessor("pcm16-capture", Pcm16Capture);
