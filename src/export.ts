// Export options, checked before the core writes anything: the format, and an output path whose folder
// exists (or can be made) and that names an `.onnx` file.
import { mkdirSync, statSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { EmotionPipelineError, invalidOption } from './errors.js'
import type { OnnxSidecar } from './generated/results.js'

export const EXPORT_FORMATS = ['onnx'] as const
export type ExportFormat = (typeof EXPORT_FORMATS)[number]

export interface ExportModelOptions {
  /** The file to write (`.onnx`); its sidecar goes to `<out>.json`. Its folder is made when missing. */
  out: string
  /** @default 'onnx' */
  format?: ExportFormat
  /** Also output `features`, the normalised log-mel the network reads (for checking the front end). */
  featuresOutput?: boolean
}

/** The sidecar, with where the files went. */
export interface ExportResult extends OnnxSidecar {
  path: string
  sidecarPath: string
}

/** The absolute output path, its folder made; throws INVALID_OPTION / IO naming the option. */
export function checkExportOptions(options: ExportModelOptions): string {
  const format = options.format ?? 'onnx'
  if (!(EXPORT_FORMATS as readonly string[]).includes(format)) {
    throw invalidOption('format', `must be one of ${EXPORT_FORMATS.join(', ')}, got ${String(format)}`)
  }
  if (typeof options.out !== 'string' || !options.out.endsWith('.onnx')) {
    throw invalidOption('out', `must name an .onnx file, got ${String(options.out)}`)
  }
  const out = resolve(options.out)
  try {
    mkdirSync(dirname(out), { recursive: true })
  } catch (err) {
    throw new EmotionPipelineError(
      'IO',
      `option \`out\`: cannot make the folder ${dirname(out)} (${(err as NodeJS.ErrnoException).code})`,
      {
        cause: err,
      },
    )
  }
  if (statSync(out, { throwIfNoEntry: false })?.isDirectory()) throw invalidOption('out', `${out} is a folder`)
  return out
}
