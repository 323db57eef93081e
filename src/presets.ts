// The presets' choices for the pipeline, read from the core's one table (`train::preset`, generated
// as `PRESETS`): help texts, the README and the pipeline all take them from here.
import type { ModelKind, Preset } from './generated/options.js'
import { MODEL_INPUTS, PRESETS } from './generated/options.js'

/**
 * A model kind (the core's `ModelKind`): `encoder` is a head on a frozen pretrained speech encoder's
 * pooled states (`encoder` option), `probe` one linear layer on them.
 */
export type ModelName = ModelKind

/** The inputs a model reads (the core's table): `mel`, `tokens` or `embedding`. */
export type ModelInput = (typeof MODEL_INPUTS)[ModelName][number]

/** Whether `model` reads `input`. */
export function uses(model: ModelName, input: ModelInput): boolean {
  return (MODEL_INPUTS[model] as readonly ModelInput[]).includes(input)
}

const of = (preset: Preset | undefined) => PRESETS[preset ?? 'recommended']

/** The models a preset trains when `models` is not given: the best measured, or the published three. */
export function defaultModels(preset: Preset | undefined): ModelName[] {
  return [...of(preset).models]
}

/** The encoder model's speed-perturbed training copies when `speedPerturb` is not given. */
export function defaultSpeedPerturb(preset: Preset | undefined): number[] {
  return [...of(preset).speedPerturb]
}

/**
 * The weight of the encoder head's speaker adversary when `train.encoder.encoderHead` does not set one
 * (the core switches it off below 2 training speakers).
 */
export function defaultSpeakerAdversary(preset: Preset | undefined): number {
  return of(preset).speakerAdversary
}

/** Every model `models` may name. */
export const MODEL_NAMES = Object.keys(MODEL_INPUTS) as ModelName[]

/** Epochs when `epochs` is not set: every model's, and the encoder model's, per preset. */
export const PRESET_EPOCHS = {
  default: PRESETS.recommended.epochs,
  recommendedEncoder: PRESETS.recommended.encoderEpochs,
} as const
