// Helpers for this repository's own tests, benchmarks and GPU scripts: `emotion-pipeline/dev`. Not the
// library's API (the main entry point is), and free to change between versions.
export { findRavdess } from './data.js'
export { REFERENCE_ACCURACY } from './report.js'
export { cudaGraphSelfTest, processGroupSelfTest, tensorRoundTrip, timeMelOnDevice } from './tensor.js'
/** The default local Whisper model folder (`emotion-pipeline install-models` builds it). */
export { whisperModelDir as bundledWhisperDir } from './whisper-install.js'
