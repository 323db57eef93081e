// Copies the microphone's samples (first channel, at the AudioContext's rate) to the page.
class Recorder extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0]?.[0]
    if (channel) this.port.postMessage(channel.slice())
    return true
  }
}
registerProcessor('recorder', Recorder)
