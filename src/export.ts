// Export options, checked before the core writes anything (the format; an output path that names an
// `.onnx` file, its folder made), and the browser folder: the page in the package's web/, the model and
// onnxruntime-web's WebAssembly files copied beside it.
import { copyFileSync, existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join, resolve } from 'node:path'
import { checkKnownOptions, EmotionPipelineError, invalidOption } from './errors.js'
import type { OnnxSidecar } from './generated/results.js'
import { ensureWritableDir } from './run-dir.js'

export const EXPORT_FORMATS = ['onnx'] as const
export type ExportFormat = (typeof EXPORT_FORMATS)[number]

export interface ExportModelOptions {
  /** The file to write (`.onnx`); its sidecar goes to `<out>.json`. Its folder is made when missing. */
  out: string
  /** @default 'onnx' */
  format?: ExportFormat
  /**
   * Also output `features`, what the network reads: the normalised log-mel of a log-mel model, the
   * pooled encoder states of an encoder or probe model (for checking the graph against the library).
   */
  featuresOutput?: boolean
  /** Replace an existing `out` (and its sidecar); without it an existing file is refused. @default false */
  overwrite?: boolean
}

const EXPORT_KEYS = Object.keys({ out: true, format: true, featuresOutput: true, overwrite: true } satisfies Record<
  keyof ExportModelOptions,
  true
>)

/** The sidecar, with where the files went. */
export interface ExportResult extends OnnxSidecar {
  path: string
  sidecarPath: string
}

/** The absolute output path, its folder made; throws INVALID_OPTION / IO naming the option. */
export function checkExportOptions(given: ExportModelOptions): string {
  const options = given ?? ({} as ExportModelOptions)
  checkKnownOptions(options, EXPORT_KEYS, 'export')
  const format = options.format ?? 'onnx'
  if (!(EXPORT_FORMATS as readonly string[]).includes(format)) {
    throw invalidOption('format', `must be one of ${EXPORT_FORMATS.join(', ')}, got ${String(format)}`)
  }
  if (typeof options.out !== 'string' || !options.out.endsWith('.onnx')) {
    throw invalidOption('out', `must name an .onnx file, got ${String(options.out)}`)
  }
  const out = resolve(options.out)
  ensureWritableDir(dirname(out), 'out')
  const existing = statSync(out, { throwIfNoEntry: false })
  if (existing?.isDirectory()) throw invalidOption('out', `${out} is a folder`)
  for (const file of [out, `${out}.json`])
    if (existsSync(file) && !options.overwrite)
      throw invalidOption('out', `${file} exists: pass overwrite: true (--overwrite) to replace it`)
  return out
}

/** Runs a file-system step, turning its failure into an IO error naming the option and the path. */
function ioStep<T>(option: string, what: string, step: () => T): T {
  try {
    return step()
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    throw new EmotionPipelineError('IO', `option \`${option}\`: ${what} (${e.code ?? e.message})`, { cause: err })
  }
}

/** The page files (in the package's `web/`) and the onnxruntime-web files it loads from `ort/`. */
const PAGE_FILES = ['index.html', 'app.js', 'recorder-worklet.js']
const ORT_FILES = ['ort.wasm.min.mjs', 'ort-wasm-simd-threaded.mjs', 'ort-wasm-simd-threaded.wasm']

export interface BrowserExportOptions {
  /** The folder to write (made when missing); the page, `model.onnx` and `ort/` go in it. */
  dir: string
  /** Write into a folder that is not empty (replacing the page's files); without it one is refused. @default false */
  overwrite?: boolean
}

/** What `exportBrowser` wrote. */
export interface BrowserExport {
  dir: string
  /** Files written, relative to `dir`. */
  files: string[]
  bytes: number
  model: ExportResult
}

/** onnxruntime-web's `dist/` (a pinned optional dependency), or a clear error when it is missing. */
function onnxruntimeWebDist(): string {
  let entry: string
  try {
    entry = createRequire(import.meta.url).resolve('onnxruntime-web')
  } catch (err) {
    throw new EmotionPipelineError(
      'MODEL_NOT_FOUND',
      `the browser page needs onnxruntime-web ${ONNXRUNTIME_WEB}, an optional dependency that is not installed: npm install onnxruntime-web@${ONNXRUNTIME_WEB}`,
      { cause: err },
    )
  }
  const dist = dirname(entry)
  const missing = ORT_FILES.filter((f) => !existsSync(join(dist, f)))
  if (missing.length)
    throw new EmotionPipelineError('MODEL_NOT_FOUND', `onnxruntime-web in ${dist} lacks ${missing.join(', ')}: reinstall it`)
  return dist
}

/** The version the page was tested with: the one package.json pins. */
const ONNXRUNTIME_WEB: string = JSON.parse(readFileSync(join(import.meta.dirname, '..', 'package.json'), 'utf8')).optionalDependencies[
  'onnxruntime-web'
]

/**
 * A static folder a user can serve as is: the page, `model.onnx` and its sidecar, and onnxruntime-web's
 * WebAssembly files. `exportModel` writes the model where it is told.
 */
export async function exportBrowser(
  options: BrowserExportOptions,
  exportModel: (out: string) => Promise<ExportResult>,
): Promise<BrowserExport> {
  checkKnownOptions(
    options ?? {},
    Object.keys({ dir: true, overwrite: true } satisfies Record<keyof BrowserExportOptions, true>),
    'exportBrowser',
  )
  const dir = options?.dir
  if (typeof dir !== 'string' || dir === '') throw invalidOption('dir', 'must name a folder')
  const root = resolve(dir)
  if (existsSync(root) && !statSync(root).isDirectory()) throw invalidOption('dir', `${root} is a file, not a folder`)
  const held = existsSync(root) ? readdirSync(root) : []
  if (held.length && !options.overwrite)
    throw invalidOption('dir', `${root} is not empty (${held.length} entries): pass overwrite: true (--overwrite) to write into it`)
  const dist = onnxruntimeWebDist()
  ensureWritableDir(join(root, 'ort'), 'dir')
  const model = await exportModel(join(root, 'model.onnx'))
  const page = join(import.meta.dirname, '..', 'web')
  const files = ['model.onnx', 'model.onnx.json']
  const copy = (from: string, to: string) => {
    ioStep('dir', `cannot write ${join(root, to)}`, () => copyFileSync(from, join(root, to)))
    files.push(to)
  }
  for (const f of PAGE_FILES) copy(join(page, f), f)
  for (const f of ORT_FILES) copy(join(dist, f), `ort/${f}`)
  const bytes = files.reduce((sum, f) => sum + statSync(join(root, f)).size, 0)
  return { dir: root, files, bytes, model }
}
