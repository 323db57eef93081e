// Contributor tool: `node scripts/encoders.mjs NAME...` installs encoders into the cache (the installer
// is src/encoder-install.ts, compiled into dist/ by setup); `--encoder-only NAME DIR` writes the encoder's
// variables alone (about 42 MB of whisper-base's 145 MB) to carry to a GPU host.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

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
  // The installer is product code (src/encoder-install.ts), compiled by setup into dist/.
  const { installEncoder } = await import('../dist/encoder-install.js')
  const log = (m) => console.error(`[encoders] ${m}`)
  const [flag, name, outDir] = process.argv.slice(2)
  if (flag === '--encoder-only') console.log(writeEncoderOnly(join(await installEncoder(name, { log }), 'model.bin'), outDir))
  else for (const n of process.argv.slice(2)) console.log(await installEncoder(n, { log }))
}
