// What the pipeline's presets fill in on the TypeScript side (the core fills in the training settings:
// epochs, schedule, smoothing, precision). Help texts and the README are rendered from these values.
import type { Preset } from './generated/options.js'

/** `encoder`: a head on a frozen pretrained speech encoder's pooled states (`encoder` option). */
export type ModelName = 'audio' | 'text' | 'fusion' | 'encoder'

/** The models a preset trains when `models` is not given: the best measured, or the published three. */
export function defaultModels(preset: Preset | undefined): ModelName[] {
  return preset === 'reference' ? ['audio', 'text', 'fusion'] : ['encoder']
}
/**
 * The encoder model's speed-perturbed training copies when `speedPerturb` is not given: the recommended
 * recipe's (chosen on the validation speakers of the speaker folds, docs/RESULTS.md), none for the reference.
 */
export function defaultSpeedPerturb(preset: Preset | undefined): number[] {
  return preset === 'reference' ? [] : [0.9, 1.1]
}

/**
 * The weight of the encoder head's speaker adversary when `train.encoder.encoderHead` does not set
 * one: the recommended recipe's (chosen on the validation speakers of the speaker folds over three
 * training seeds, docs/RESULTS.md), none for the reference. The pipeline gives the head the training
 * rows' speakers.
 */
export function defaultSpeakerAdversary(preset: Preset | undefined): number {
  return preset === 'reference' ? 0 : 0.3
}

/** Every model `models` may name. */
export const MODEL_NAMES: ModelName[] = ['audio', 'text', 'fusion', 'encoder']

/**
 * Epochs when `epochs` is not set: the core's rule (train/config.rs, `TrainConfig::epochs`), stated here
 * for help texts and the README; `__test__/cli.test.ts` checks it against the core's resolved settings.
 */
export const PRESET_EPOCHS = { default: 50, recommendedEncoder: 100 } as const
