// Decoding bounded by the job, not by the file's claims: a 1.7 MB FLAC of 3 hours of silence (the
// "FLAC bomb"), with its length in the header and without it, under an address-space limit of 7 GB
// (Node and libtorch reserve about 4 GB at rest). Before the bounded decoder the whole 3 h (2 GB of
// f32) was decoded before the 3 s window was cut, and the 24 h variant aborted Node.
import test from 'ava'
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { referencePython, skip, tempDir } from './helpers.js'

const dist = resolve(import.meta.dirname, '..', 'dist', 'index.js')
const python = referencePython()
const havePrlimit = spawnSync('prlimit', ['--version']).status === 0

/** A 3 h silent FLAC at 48 kHz (soundfile); `lengthless` clears STREAMINFO's total-samples field. */
function flacBomb(lengthless: boolean): string {
  const path = join(tempDir('ep-bomb-'), `bomb${lengthless ? '-lengthless' : ''}.flac`)
  const script = [
    'import sys, numpy as np, soundfile as sf',
    "with sf.SoundFile(sys.argv[1], 'w', samplerate=48000, channels=1, format='FLAC', subtype='PCM_16') as f:",
    '    z = np.zeros(48000 * 60, dtype=np.int16)',
    '    for _ in range(180): f.write(z)',
  ].join('\n')
  const r = spawnSync(python!, ['-c', script, path], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(r.stderr)
  if (lengthless) {
    const b = readFileSync(path)
    b[8 + 13] &= 0xf0 // STREAMINFO: the top 4 bits of the 36-bit total-samples field…
    b.writeUInt32BE(0, 8 + 14) // …and the low 32: 0 means "unknown"
    writeFileSync(path, b)
  }
  return path
}

/** Runs `body` (an ES module using `m`, the package) in Node under a 7 GB address-space limit. */
function limited(body: string) {
  const script = `const m = await import(${JSON.stringify(dist)});\n${body}`
  return spawnSync('prlimit', ['--as=7000000000', process.execPath, '--input-type=module', '-e', script], {
    encoding: 'utf8',
    timeout: 240_000,
  })
}

const tryDecode = (call: string) => `
  try { const r = await ${call}; console.log(JSON.stringify({ ok: true, cut: r.cut, shape: r.shape })) }
  catch (e) { console.log(JSON.stringify({ ok: false, code: e.code, message: e.message })) }`

for (const lengthless of [false, true]) {
  const name = lengthless ? 'without a length in its header' : 'with its length in the header'
  test.serial(`a 3 h FLAC bomb ${name}: refused by maxDuration, or featurised from its window, in bounded memory`, (t) => {
    if (!python) return skip(t, 'no Python with soundfile to write the FLAC: skipped')
    if (!havePrlimit) return skip(t, 'prlimit is not installed: skipped')
    const bomb = flacBomb(lengthless)
    t.true(readFileSync(bomb).length < 4e6)
    // Decoding the whole file: refused as too long (maxDuration 600 s by default), the process lives.
    const whole = limited(tryDecode(`m.decodeAudio(${JSON.stringify(bomb)})`))
    t.is(whole.signal, null, whole.stderr.slice(-1000))
    const refused = JSON.parse(whole.stdout.trim().split('\n').pop()!)
    t.false(refused.ok)
    t.is(refused.code, 'AUDIO_DECODE')
    t.regex(refused.message, /bomb.*\.flac.*(10800\.0|600\.\d) s long, more than the 600 s allowed \(maxDuration\)/)
    // Features of its 3 s window, with the limit raised past its length: only the window is decoded.
    const mel = limited(tryDecode(`m.extractMel([${JSON.stringify(bomb)}], { device: 'cpu', strict: true, maxDuration: 20000 })`))
    t.is(mel.signal, null, mel.stderr.slice(-1000))
    const features = JSON.parse(mel.stdout.trim().split('\n').pop()!)
    t.true(features.ok, JSON.stringify(features))
    t.deepEqual(features.cut, [0], 'reported as longer than the window')
    t.deepEqual(features.shape, [1, 128, 280])
  })
}

test('a file that is not regular or is empty is refused by name', async (t) => {
  const { decodeAudio } = await import(dist)
  const empty = join(tempDir('ep-empty-'), 'empty.wav')
  writeFileSync(empty, '')
  await t.throwsAsync(decodeAudio(empty), { message: /empty\.wav.*0 bytes/ })
  if (existsSync('/dev/zero')) await t.throwsAsync(decodeAudio('/dev/zero'), { message: /\/dev\/zero.*not a regular file/ })
})
