export { deviceInfo } from './device.js'
export { doctor, formatDoctor } from './doctor.js'
export type { DoctorCheck, DoctorReport } from './doctor.js'
export type { DeviceInfo, DeviceSpec, GpuDevice } from './device.js'
export { decodeAudio, decodeAudioSync, extractMel } from './audio.js'
export type { AudioInput, DecodedAudio, ExtractMelOptions, MelFeatures, MelOptions, ProgressEvent } from './audio.js'
export { DEFAULT_ENCODER, ENCODER_NAMES, extractEmbeddings, installedEncoderDir, resolveEncoder } from './encoder.js'
export type { EmbeddingsProgress } from './encoder.js'
export type { Embeddings, EncoderName, ExtractEmbeddingsOptions } from './encoder.js'
export { indexDataset, loadSplit, saveSplit, splitDataset } from './dataset.js'
export type { DatasetIndex, DatasetItem, IndexOptions, RavdessName, Split, SplitOptions } from './dataset.js'
export { train } from './train.js'
export { EmotionModel, loadModel, loadRun } from './model.js'
export type { LoadModelOptions, LoadRunOptions, RunChoice, TimelineOptions } from './model.js'
export type { LabelScore, PredictFailure, PredictInput, PredictOptions, PredictResult, PredictRowResult } from './predict.js'
export { EmotionStream } from './stream.js'
export type { StreamOptions } from './stream.js'
export { timelineCsv, timelineSvg } from './timeline-output.js'
export { EXPORT_FORMATS } from './export.js'
export type { BrowserExport, BrowserExportOptions, ExportFormat, ExportModelOptions, ExportResult } from './export.js'
export { joinWorld, worldFromEnv } from './distributed.js'
export type { DistributedOption, World, WorldOptions } from './distributed.js'
export type {
  ClassScores,
  EpochRecord,
  Metrics,
  ModelMeta,
  Prediction,
  TrainEvent,
  TrainOptions,
  TrainResult,
  TrainSet,
} from './train.js'
export type { OnnxSidecar, Segment, Timeline } from './generated/results.js'
export { trainPipeline } from './pipeline.js'
export { crossValidate } from './cross-validate.js'
export type { CrossValidateEvent, CrossValidateOptions, CrossValidateResult, MeanStd, ModelSummary } from './cross-validate.js'
export type { ModelName, PipelineEvent, PipelineOptions, PipelineResult } from './pipeline.js'
export { Tokenizer } from './tokenizer.js'
export { DEFAULT_WHISPER_MODEL, transcribe, wordErrorRate } from './transcribe.js'
export type { Transcript, TranscribeOptions } from './transcribe.js'
export { EmotionPipelineError } from './errors.js'
export type { ErrorCode } from './errors.js'
export type {
  AdamConfig,
  Align,
  Amp,
  AudioCnnConfig,
  EarlyStopping,
  EncoderInput,
  EncoderPrecision,
  Pooling,
  FusionConfig,
  LrSchedule,
  MelNorm,
  MelScale,
  ModelKind,
  PadMode,
  StopMetric,
  TextLstmConfig,
} from './generated/options.js'
