// Fuzz test of the audio decoders: a fixed table of header mutations of real WAV, FLAC and Ogg files
// (absurd sample rates, channels, bits, sizes past the end, truncation at every header byte) plus
// seeded random mutations, fed through every public decode path (decodeAudioSync, decodeAudio,
// extractMel) in a child process. The process must exit normally, and each input must either decode
// or fail alone with AUDIO_DECODE naming it. `npm run fuzz` runs a longer random budget
// (EMOTION_FUZZ_RANDOM). The data holds no MP3: one is encoded from a RAVDESS WAV with lameenc in the
// contributor venv (skipped with a message where that Python is absent).
// The "huge claimed length, tiny file" family (`claims-*`, one per format: a WAV data size of 4 GB, a
// FLAC total of 2^36 samples, an Ogg last granule of 2^40, an MP3 Xing frame count of 2^31) is also
// featurised with `maxDuration` raised past the claim, and the child runs under `prlimit --as` of 7 GB
// where prlimit exists: sizing anything from the claim aborts the process.
import test from 'ava'
import { spawnSync } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { listAudio, ravdessDir, referencePython, shared, tempDir, wavDir } from './helpers.js'

const dist = resolve(import.meta.dirname, '..', 'dist', 'index.js')
const RANDOM_PER_FORMAT = Number(process.env.EMOTION_FUZZ_RANDOM ?? 40)
const havePrlimit = spawnSync('prlimit', ['--version']).status === 0

function rng(seed: number) {
  let s = seed >>> 0
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    return s / 2 ** 32
  }
}

/** Offset of a RIFF chunk's body (after its 8-byte header). */
function chunk(bytes: Buffer, id: string): { at: number; size: number } {
  let at = 12
  while (at + 8 <= bytes.length) {
    const size = bytes.readUInt32LE(at + 4)
    if (bytes.toString('latin1', at, at + 4) === id) return { at: at + 8, size }
    at += 8 + size + (size % 2)
  }
  throw new Error(`no ${id} chunk`)
}

function wavMutants(original: Buffer): [string, Buffer][] {
  const fmt = chunk(original, 'fmt ')
  const data = chunk(original, 'data')
  const set = (name: string, fn: (b: Buffer) => void): [string, Buffer] => {
    const b = Buffer.from(original)
    fn(b)
    return [name, b]
  }
  const out: [string, Buffer][] = [
    set('rate-0', (b) => b.writeUInt32LE(0, fmt.at + 4)),
    set('rate-1', (b) => b.writeUInt32LE(1, fmt.at + 4)),
    set('rate-max', (b) => b.writeUInt32LE(0xffffffff, fmt.at + 4)),
    set('channels-0', (b) => b.writeUInt16LE(0, fmt.at + 2)),
    set('channels-max', (b) => b.writeUInt16LE(0xffff, fmt.at + 2)),
    set('bits-0', (b) => b.writeUInt16LE(0, fmt.at + 14)),
    set('bits-7', (b) => b.writeUInt16LE(7, fmt.at + 14)),
    set('bits-64', (b) => b.writeUInt16LE(64, fmt.at + 14)),
    set('block-align-0', (b) => b.writeUInt16LE(0, fmt.at + 12)),
    set('format-unknown', (b) => b.writeUInt16LE(0x1234, fmt.at)),
    set('data-size-past-riff', (b) => b.writeUInt32LE(0xfffffff0, data.at - 4)),
    set('claims-data-size-4GB', (b) => {
      b.writeUInt32LE(0xfffffff0, 4)
      b.writeUInt32LE(0xfffffff0 - data.at, data.at - 4)
    }),
    set('fmt-size-past-end', (b) => b.writeUInt32LE(0xfffffff0, fmt.at - 4)),
    set('riff-size-0', (b) => b.writeUInt32LE(0, 4)),
  ]
  // Truncation at every byte of the RIFF and fmt headers, then at each boundary of the later chunk headers.
  const cuts = new Set<number>()
  for (let cut = 0; cut <= fmt.at + fmt.size; cut++) cuts.add(cut)
  for (let at = 12; at + 8 <= data.at; at += 8 + original.readUInt32LE(at + 4) + (original.readUInt32LE(at + 4) % 2)) {
    for (const d of [0, 2, 4, 6, 8]) cuts.add(at + d)
  }
  for (const d of [0, 1, 2, 3, 4, 100]) cuts.add(data.at + d)
  for (const cut of [...cuts].sort((a, b) => a - b)) out.push([`truncated-${cut}`, original.subarray(0, cut)])
  return out
}

function flacMutants(original: Buffer): [string, Buffer][] {
  // "fLaC", a 4-byte block header, then STREAMINFO: bytes 10–12 hold the 20-bit rate, 3-bit channels, 5-bit bps.
  const info = 8
  const set = (name: string, fn: (b: Buffer) => void): [string, Buffer] => {
    const b = Buffer.from(original)
    fn(b)
    return [name, b]
  }
  const out: [string, Buffer][] = [
    set('rate-0', (b) => {
      b[info + 10] = 0
      b[info + 11] = 0
      b[info + 12] &= 0x0f
    }),
    set('rate-1', (b) => {
      b[info + 10] = 0
      b[info + 11] = 0
      b[info + 12] = (b[info + 12] & 0x0f) | 0x10
    }),
    set('claims-total-samples-max', (b) => {
      b[info + 13] |= 0x0f
      b.writeUInt32BE(0xffffffff, info + 14)
    }),
    set('block-size-0', (b) => b.writeUInt16BE(0, info + 2)),
  ]
  for (let cut = 0; cut <= 64; cut++) out.push([`truncated-${cut}`, original.subarray(0, cut)])
  return out
}

/** Ogg's page checksum: CRC-32 with polynomial 0x04c11db7, unreflected, initial value 0. */
function oggCrc(page: Buffer): number {
  let crc = 0
  for (const byte of page) {
    crc ^= byte << 24
    for (let k = 0; k < 8; k++) crc = crc & 0x80000000 ? (crc << 1) ^ 0x04c11db7 : crc << 1
  }
  return crc >>> 0
}

/** The stream claims 2^40 samples: the last page's granule position, its checksum recomputed. */
function oggClaimingHugeLength(original: Buffer): Buffer {
  const b = Buffer.from(original)
  const at = b.lastIndexOf('OggS')
  const segments = b[at + 26]
  let length = 27 + segments
  for (let i = 0; i < segments; i++) length += b[at + 27 + i]
  b.writeBigUInt64LE(2n ** 40n, at + 6)
  b.writeUInt32LE(0, at + 22)
  b.writeUInt32LE(oggCrc(b.subarray(at, at + length)), at + 22)
  return b
}

function oggMutants(original: Buffer): [string, Buffer][] {
  const out: [string, Buffer][] = [['claims-granule-2^40', oggClaimingHugeLength(original)]]
  for (let cut = 0; cut <= 256; cut += 4) out.push([`truncated-${cut}`, original.subarray(0, cut)])
  return out
}

function randomMutants(original: Buffer, seed: number, count: number): [string, Buffer][] {
  const next = rng(seed)
  return Array.from({ length: count }, (_, i): [string, Buffer] => {
    const b = Buffer.from(original)
    const flips = 1 + Math.floor(next() * 8)
    const headerOnly = next() < 0.7
    for (let k = 0; k < flips; k++) {
      const at = Math.floor(next() * (headerOnly ? Math.min(256, b.length) : b.length))
      b[at] = Math.floor(next() * 256)
    }
    return [`random-${seed}-${i}`, b]
  })
}

/**
 * A Xing frame claiming 2^31 frames put before the stream: a silent frame with the first frame's
 * header, its side information zeroed, then "Xing", flags (frame count present) and the count.
 */
function mp3ClaimingHugeLength(original: Buffer): Buffer {
  const header = original.readUInt32BE(0)
  const mpeg1 = ((header >>> 19) & 3) === 3
  const mono = ((header >>> 6) & 3) === 3
  const bitrate = [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320][(header >>> 12) & 15] * 1000
  const rate = [44100, 48000, 32000][(header >>> 10) & 3] / (mpeg1 ? 1 : 2)
  const length = Math.floor(((mpeg1 ? 144 : 72) * bitrate) / rate) + ((header >>> 9) & 1)
  const frame = Buffer.alloc(length)
  frame.writeUInt32BE(header, 0)
  const tag = 4 + (mpeg1 ? (mono ? 17 : 32) : mono ? 9 : 17)
  frame.write('Xing', tag, 'latin1')
  frame.writeUInt32BE(1, tag + 4)
  frame.writeUInt32BE(2 ** 31, tag + 8)
  return Buffer.concat([frame, original])
}

function mp3Mutants(original: Buffer): [string, Buffer][] {
  const out: [string, Buffer][] = [['claims-xing-2^31-frames', mp3ClaimingHugeLength(original)]]
  for (let cut = 0; cut <= 1200; cut += 13) out.push([`truncated-${cut}`, original.subarray(0, cut)])
  return out
}

/** An MP3 of the first original WAV, encoded with lameenc (64 kbit/s mono), or undefined. */
function encodeMp3(): string | undefined {
  const python = referencePython()
  if (!python || !existsSync(wavDir)) return undefined
  const out = join(tempDir('ep-mp3-'), 'clip.mp3')
  const script = [
    'import sys, wave, lameenc',
    'w = wave.open(sys.argv[1])',
    'e = lameenc.Encoder(); e.set_bit_rate(64); e.set_in_sample_rate(w.getframerate()); e.set_channels(w.getnchannels()); e.set_quality(7)',
    'open(sys.argv[2], "wb").write(e.encode(w.readframes(w.getnframes())) + e.flush())',
  ].join('\n')
  const r = spawnSync(python, ['-c', script, listAudio(wavDir)[0], out], { encoding: 'utf8' })
  return r.status === 0 ? out : undefined
}

const firstIn = (dir: string, ext: string) => {
  if (!existsSync(dir)) return undefined
  const sub = readdirSync(dir).find((d) => d.startsWith('Actor_'))
  return sub ? listAudio(join(dir, sub)).find((f) => f.endsWith(ext)) : listAudio(dir).find((f) => f.endsWith(ext))
}

const sources: { format: string; file?: string; mutants: (b: Buffer) => [string, Buffer][]; seed: number }[] = [
  { format: 'wav', file: existsSync(wavDir) ? listAudio(wavDir)[0] : undefined, mutants: wavMutants, seed: 1 },
  { format: 'flac', file: firstIn(ravdessDir, '.flac'), mutants: flacMutants, seed: 2 },
  // The Vorbis copy: beside RAVDESS_DIR (as in ../shared/data), else ../shared/data.
  {
    format: 'ogg',
    file: firstIn(join(ravdessDir, '..', 'ravdess-device'), '.ogg') ?? firstIn(join(shared, 'ravdess-device'), '.ogg'),
    mutants: oggMutants,
    seed: 3,
  },
  { format: 'mp3', file: encodeMp3(), mutants: mp3Mutants, seed: 4 },
]

for (const source of sources) {
  test(`fuzz: mutated ${source.format} files decode or fail alone with AUDIO_DECODE, on every decode path`, (t) => {
    if (!source.file) {
      t.log(`SKIPPED: no ${source.format} file (../shared/data, or lameenc in the contributor venv for MP3)`)
      return t.pass()
    }
    const original = readFileSync(source.file)
    const dir = tempDir(`ep-fuzz-${source.format}-`)
    const cases = [...source.mutants(original), ...randomMutants(original, source.seed, RANDOM_PER_FORMAT)]
    const paths = cases.map(([name, bytes]) => {
      const path = join(dir, `${name}.${source.format}`)
      writeFileSync(path, bytes)
      return path
    })
    const list = join(dir, 'inputs.json')
    writeFileSync(list, JSON.stringify(paths))
    const script = `
      const m = await import(${JSON.stringify(dist)})
      const paths = JSON.parse((await import('node:fs')).readFileSync(${JSON.stringify(list)}, 'utf8'))
      const good = ${JSON.stringify(source.file)}
      const results = []
      for (const p of paths) {
        let sync = 'ok', async_ = 'ok'
        try { m.decodeAudioSync(p) } catch (e) { sync = e.code === 'AUDIO_DECODE' && e.message.includes(p) ? 'AUDIO_DECODE' : e.code + ': ' + e.message }
        try { await m.decodeAudio(p) } catch (e) { async_ = e.code === 'AUDIO_DECODE' && e.message.includes(p) ? 'AUDIO_DECODE' : e.code + ': ' + e.message }
        results.push({ p, sync, async: async_ })
      }
      const batch = [good, ...paths, good]
      const mel = await m.extractMel(batch, { device: 'cpu', batchSize: 16 })
      // The claims family with maxDuration past the claim: only the window is decoded.
      const claims = []
      for (const p of paths.filter((p) => p.includes('/claims-'))) {
        const sync = results.find((x) => x.p === p).sync
        let decodedWhole
        try { m.decodeAudioSync(p) } catch (e) { decodedWhole = e.message }
        try {
          const r = await m.extractMel([p], { device: 'cpu', strict: true, maxDuration: 1e9 })
          claims.push({ p, decodedWhole, window: r.shape, cut: r.cut })
        } catch (e) { claims.push({ p, decodedWhole, error: (e.message.includes(p) ? e.code : 'unnamed ' + e.code) + ': ' + e.message.replace(p, '') }) }
      }
      console.log(JSON.stringify({ results, claims, rows: mel.indices, failed: mel.failed.map((f) => ({ index: f.index, code: f.code })) }))`
    const node = [process.execPath, '--input-type=module', '-e', script]
    const [command, ...args] = havePrlimit ? ['prlimit', '--as=7000000000', ...node] : node
    const r = spawnSync(command, args, {
      encoding: 'utf8',
      timeout: 240_000,
      maxBuffer: 64 * 2 ** 20,
    })
    if (r.error) throw r.error
    t.is(r.signal, null, `the process was killed by ${r.signal}: ${r.stderr.slice(-2000)}`)
    t.is(r.status, 0, r.stderr.slice(-2000))
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!)
    const unexpected = out.results.filter(
      (x: { sync: string; async: string }) => !/^(ok|AUDIO_DECODE)$/.test(x.sync) || !/^(ok|AUDIO_DECODE)$/.test(x.async),
    )
    t.deepEqual(unexpected, [], 'every input decodes or is AUDIO_DECODE naming it')
    const decoded = out.results.filter((x: { sync: string }) => x.sync === 'ok').length
    t.log(`${cases.length} ${source.format} mutants: ${decoded} decode, ${cases.length - decoded} refused with AUDIO_DECODE`)
    // extractMel: the two good copies around the mutants are featurised; a failure is a coded error for that input alone.
    t.true(out.rows.includes(0) && out.rows.includes(paths.length + 1), 'the good files in the same batch are featurised')
    t.true(out.failed.every((f: { index: number; code: string }) => f.index > 0 && f.index <= paths.length && f.code === 'AUDIO_DECODE'))
    t.is(out.rows.length + out.failed.length, paths.length + 2, 'every input is either a row or a listed failure')
    // The claims family: the claim is read (decoding the whole file is refused by it), and the window is
    // featurised (or the file refused by name) in bounded memory.
    t.true(out.claims.length > 0, 'the format has a claims-* mutant')
    for (const c of out.claims) {
      t.regex(c.decodedWhole ?? 'decoded', /s long, more than the 600 s allowed \(maxDuration\)/, `${c.p}: the claim is read`)
      t.deepEqual([c.error, c.cut, c.window?.[0]], [undefined, [0], 1], `${c.p}: its window is featurised, reported as cut`)
    }
    t.log(
      `claims family (${havePrlimit ? 'under prlimit --as=7 GB' : 'no prlimit: address space unlimited'}): ${JSON.stringify(out.claims.map((c: { p: string; cut?: number[]; error?: string }) => ({ file: c.p.split('/').pop(), cut: c.cut, error: c.error })))}`,
    )
  })
}
