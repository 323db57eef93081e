import { inflateSync } from 'node:zlib'
import { execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { homedir, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

export const shared = resolve(import.meta.dirname, '..', '..', 'shared', 'data')
export const ravdessDir = process.env.RAVDESS_DIR ?? join(shared, 'ravdess')
// The 16 original WAVs: RAVDESS_WAV_DIR, else beside RAVDESS_DIR (as in ../shared/data), else ../shared/data.
export const wavDir =
  process.env.RAVDESS_WAV_DIR ??
  [process.env.RAVDESS_DIR && join(process.env.RAVDESS_DIR, '..', 'ravdess-wav'), join(shared, 'ravdess-wav')].find(
    (d) => d && existsSync(d),
  ) ??
  join(shared, 'ravdess-wav')
export const haveRavdess = existsSync(ravdessDir)
export const haveWavs = existsSync(wavDir)
export const NO_DATA = `RAVDESS not found at ${ravdessDir} (set RAVDESS_DIR): skipped`
export const NO_WAVS = `the original RAVDESS WAVs were not found at ${wavDir} (set RAVDESS_WAV_DIR): skipped`

export function listAudio(dir: string): string[] {
  return readdirSync(dir)
    .filter((f) => /\.(wav|flac|ogg|mp3)$/i.test(f))
    .sort()
    .map((f) => join(dir, f))
}

const made: string[] = []
// Test folders go when the test file's worker exits (an install test's cache alone is 1.2 GB).
process.on('exit', () => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true })
})

export function tempDir(prefix = 'ep-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  made.push(dir)
  return dir
}

/** The Python with torch + torchaudio 2.11 that provisioned libtorch, or null. */
export function referencePython(): string | null {
  const candidates = [
    process.env.EMOTION_PIPELINE_PYTHON,
    join(process.env.EMOTION_PIPELINE_CACHE ?? join(homedir(), '.cache', 'emotion-pipeline'), 'libtorch-2.11.0', 'bin', 'python'),
  ]
  for (const py of candidates) {
    if (!py || !existsSync(py)) continue
    try {
      execFileSync(py, ['-c', 'import torchaudio, numpy'], { stdio: 'ignore' })
      return py
    } catch {
      /* try the next one */
    }
  }
  return null
}

export type WavFormat = 'u8' | 'i16' | 'i24' | 'i32' | 'f32' | 'f64'

/** Writes a WAV file; `frames[ch][i]` in [-1, 1]. Optional extra chunk before `data`, extensible header. */
export function writeWav(
  path: string,
  frames: number[][] | Float32Array[],
  sampleRate: number,
  format: WavFormat,
  opts: { extensible?: boolean; extraChunk?: string } = {},
): void {
  const channels = frames.length
  const n = frames[0].length
  const bits = { u8: 8, i16: 16, i24: 24, i32: 32, f32: 32, f64: 64 }[format]
  const bytes = bits / 8
  const isFloat = format === 'f32' || format === 'f64'
  const data = Buffer.alloc(n * channels * bytes)
  let o = 0
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < channels; c++) {
      const v = Number(frames[c][i])
      if (format === 'u8') data.writeUInt8(Math.round(v * 127 + 128), o)
      else if (format === 'i16') data.writeInt16LE(Math.round(v * 32767), o)
      else if (format === 'i24') data.writeIntLE(Math.round(v * 8388607), o, 3)
      else if (format === 'i32') data.writeInt32LE(Math.round(v * 2147483647), o)
      else if (format === 'f32') data.writeFloatLE(v, o)
      else data.writeDoubleLE(v, o)
      o += bytes
    }
  }
  const fmtLen = opts.extensible ? 40 : 16
  const fmt = Buffer.alloc(8 + fmtLen)
  fmt.write('fmt ', 0)
  fmt.writeUInt32LE(fmtLen, 4)
  fmt.writeUInt16LE(opts.extensible ? 0xfffe : isFloat ? 3 : 1, 8)
  fmt.writeUInt16LE(channels, 10)
  fmt.writeUInt32LE(sampleRate, 12)
  fmt.writeUInt32LE(sampleRate * channels * bytes, 16)
  fmt.writeUInt16LE(channels * bytes, 20)
  fmt.writeUInt16LE(bits, 22)
  if (opts.extensible) {
    fmt.writeUInt16LE(22, 24)
    fmt.writeUInt16LE(bits, 26)
    fmt.writeUInt32LE(channels === 1 ? 0x4 : 0x3, 28)
    // KSDATAFORMAT_SUBTYPE_PCM / _IEEE_FLOAT GUID: {0000000X-0000-0010-8000-00aa00389b71}
    fmt.writeUInt32LE(isFloat ? 3 : 1, 32)
    Buffer.from([0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xaa, 0x00, 0x38, 0x9b, 0x71]).copy(fmt, 36)
  }
  const chunks = [fmt]
  if (opts.extraChunk) {
    const extra = Buffer.alloc(8 + 12)
    extra.write(opts.extraChunk, 0)
    extra.writeUInt32LE(12, 4)
    chunks.push(extra)
  }
  const dataHeader = Buffer.alloc(8)
  dataHeader.write('data', 0)
  dataHeader.writeUInt32LE(data.length, 4)
  chunks.push(dataHeader, data)
  const body = Buffer.concat(chunks)
  const riff = Buffer.alloc(12)
  riff.write('RIFF', 0)
  riff.writeUInt32LE(4 + body.length, 4)
  riff.write('WAVE', 8)
  writeFileSync(path, Buffer.concat([riff, body]))
}

export function sine(freq: number, sampleRate: number, n: number, amp = 0.5): Float32Array {
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) out[i] = amp * Math.sin((2 * Math.PI * freq * i) / sampleRate)
  return out
}

/** Passes a test whose data is absent, saying so in the output (ava does not print t.pass messages). */
export function skip(t: { log: (...v: unknown[]) => void; pass: (m?: string) => void }, why: string): void {
  t.log(`SKIPPED: ${why}`)
  t.pass(why)
}

/**
 * Runs a command without blocking this process's event loop (so a test server in this process can
 * answer it); `input` is written to its stdin.
 */
export function runAsync(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string } = {},
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((ok) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => {
      stdout += d
    })
    child.stderr.on('data', (d) => {
      stderr += d
    })
    child.on('close', (status) => ok({ status, stdout, stderr }))
    child.stdin.end(opts.input ?? '')
  })
}

/** Decodes a PNG far enough to prove it is whole: signature, IHDR, and IDAT that inflates to the image size. */
export function decodePng(path: string): { width: number; height: number } {
  const b = readFileSync(path)
  if (!b.subarray(0, 8).equals(Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]))) throw new Error(`${path}: not a PNG`)
  let offset = 8
  let width = 0
  let height = 0
  let channels = 0
  const idat: Buffer[] = []
  while (offset < b.length) {
    const length = b.readUInt32BE(offset)
    const type = b.toString('ascii', offset + 4, offset + 8)
    const data = b.subarray(offset + 8, offset + 8 + length)
    if (type === 'IHDR') {
      width = data.readUInt32BE(0)
      height = data.readUInt32BE(4)
      channels = { 0: 1, 2: 3, 4: 2, 6: 4 }[data[9]] ?? 0
    }
    if (type === 'IDAT') idat.push(data)
    offset += 12 + length
  }
  const raw = inflateSync(Buffer.concat(idat))
  if (raw.length !== height * (1 + width * channels))
    throw new Error(`${path}: pixel data ${raw.length} bytes, expected ${height * (1 + width * channels)}`)
  return { width, height }
}

export { freePort } from '../src/distributed.js'
