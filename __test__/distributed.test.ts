// Several processes on c10d's TCPStore: a world of real worker processes joins, meets at barriers and
// shares keys; a rank that dies is named by the survivors; a port in use and an unreachable store are
// DISTRIBUTED errors; `cv --nproc-per-node 2` gives the figures of a serial run (each rank on one core).
import test from 'ava'
import { spawnSync } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { dirname, join, resolve } from 'node:path'
import { extractEmbeddings } from '../src/index.js'
import { haveRavdess, NO_DATA, ravdessDir, referencePython, runAsync, skip, tempDir, freePort } from './helpers.js'

const cli = resolve(import.meta.dirname, '..', 'dist', 'cli.js')
const dist = resolve(import.meta.dirname, '..', 'dist', 'distributed.js')

/** A worker script: joins the world in its environment, then runs `body` (an async function of `world`). */
function worker(body: string): string {
  const file = join(tempDir('ep-world-'), 'worker.mjs')
  writeFileSync(
    file,
    `import { joinWorld } from ${JSON.stringify(dist)}
try {
  const world = await joinWorld({ ...JSON.parse(process.env.WORLD), rank: Number(process.env.RANK) })
  ${body}
} catch (e) {
  console.log(JSON.stringify({ code: e.code, message: e.message }))
  process.exit(3)
}`,
  )
  return file
}

function runRanks(file: string, world: object, ranks: number) {
  return Promise.all(
    Array.from({ length: ranks }, (_, rank) =>
      runAsync(process.execPath, [file], { env: { ...process.env, WORLD: JSON.stringify(world), RANK: String(rank) } }),
    ),
  )
}

test.serial('a world of 3 processes joins on the TCPStore, meets at barriers and shares keys', async (t) => {
  const world = { worldSize: 3, localWorldSize: 3, masterPort: await freePort(), timeoutSeconds: 30, heartbeatSeconds: 5 }
  const file = worker(`
  await world.set('hello/' + world.rank, 'from ' + world.rank)
  await world.barrier('said hello')
  const heard = await Promise.all([0, 1, 2].map((r) => world.get('hello/' + r)))
  await world.leave()
  console.log(JSON.stringify({ rank: world.rank, size: world.worldSize, heard }))`)
  const results = await runRanks(file, { ...world, localRank: 0 }, 3)
  for (const [rank, r] of results.entries()) {
    t.is(r.status, 0, r.stderr + r.stdout)
    t.deepEqual(JSON.parse(r.stdout), { rank, size: 3, heard: ['from 0', 'from 1', 'from 2'] })
  }
})

test.serial('a rank that dies is named by the others, within the heartbeat time', async (t) => {
  const world = { worldSize: 2, localWorldSize: 2, masterPort: await freePort(), timeoutSeconds: 60, heartbeatSeconds: 1.5 }
  // Rank 1 dies without a word (no clean-up) after joining; rank 0 waits at a barrier.
  const file = worker(`
  if (world.rank === 1) process.kill(process.pid, 'SIGKILL')
  const started = Date.now()
  try { await world.barrier('after the crash') } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message, seconds: (Date.now() - started) / 1000 })); process.exit(0) }
  console.log('{}')`)
  const [zero, one] = await runRanks(file, { ...world, localRank: 0 }, 2)
  t.is(one.status, null, 'rank 1 was killed')
  t.is(zero.status, 0, zero.stderr)
  const seen = JSON.parse(zero.stdout) as { code: string; message: string; seconds: number }
  t.is(seen.code, 'DISTRIBUTED')
  t.regex(seen.message, /rank 1 stopped \(no heartbeat for [\d.]+ s\) before barrier `after the crash`; this is rank 0/)
  t.true(seen.seconds < 10, `${seen.seconds} s`)
  t.log(`rank 0 named the dead rank after ${seen.seconds.toFixed(1)} s (heartbeat 1.5 s)`)
})

test.serial('a slow rank that keeps beating is waited for past timeoutSeconds; a rank that fails is named with its reason', async (t) => {
  const world = { worldSize: 2, localWorldSize: 2, masterPort: await freePort(), timeoutSeconds: 2, heartbeatSeconds: 1.5 }
  const file = worker(`
  const started = Date.now()
  if (world.rank === 1) await new Promise((r) => setTimeout(r, 4000))
  await world.barrier('slow')
  const waited = (Date.now() - started) / 1000
  if (world.rank === 1) { world.fail('disk full'); console.log(JSON.stringify({ waited })); process.exit(0) }
  try { await world.barrier('after') } catch (e) { console.log(JSON.stringify({ waited, code: e.code, message: e.message })); process.exit(0) }
  console.log(JSON.stringify({ waited }))`)
  const [zero, one] = await runRanks(file, { ...world, localRank: 0 }, 2)
  t.is(one.status, 0, one.stderr)
  t.is(zero.status, 0, zero.stderr)
  const seen = JSON.parse(zero.stdout) as { waited: number; code: string; message: string }
  t.true(seen.waited >= 3.5, `rank 0 waited ${seen.waited} s for the slow rank (timeoutSeconds 2)`)
  t.is(seen.code, 'DISTRIBUTED')
  t.regex(seen.message, /rank 1 failed \(disk full\) while this rank waited for barrier `after`; this is rank 0/)
})

test.serial('a port in use and an unreachable store are DISTRIBUTED errors that say which', async (t) => {
  const busy = createServer()
  const port = await new Promise<number>((done) => busy.listen(0, '127.0.0.1', () => done((busy.address() as { port: number }).port)))
  try {
    const file = worker(`console.log('{}')`)
    const [server] = await runRanks(file, { worldSize: 2, localWorldSize: 2, masterPort: port, timeoutSeconds: 5, localRank: 0 }, 1)
    t.is(server.status, 3)
    t.regex(JSON.parse(server.stdout).message, new RegExp(`port ${port} is in use`))
  } finally {
    busy.close()
  }
  const nobody = await freePort()
  const file = worker(`console.log('{}')`)
  const started = Date.now()
  const client = spawnSync(process.execPath, [file], {
    env: {
      ...process.env,
      RANK: '1',
      WORLD: JSON.stringify({ worldSize: 2, localWorldSize: 2, localRank: 1, masterPort: nobody, timeoutSeconds: 3 }),
    },
    encoding: 'utf8',
  })
  t.is(client.status, 3, client.stderr)
  const error = JSON.parse(client.stdout)
  t.is(error.code, 'DISTRIBUTED')
  t.regex(error.message, new RegExp(`127\\.0\\.0\\.1:${nobody}: could not reach it`))
  t.log(`unreachable store reported after ${((Date.now() - started) / 1000).toFixed(1)} s (timeout 3 s)`)
})

test.serial('cv --nproc-per-node 2, and under torchrun, gives the figures of the serial run', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const args = (out: string) => [
    cli,
    'cv',
    '--data',
    ravdessDir,
    '--out',
    out,
    '--models',
    'audio',
    '--folds',
    '3',
    '--epochs',
    '1',
    '--device',
    'cpu',
    '--max-items',
    '96',
    '--train',
    JSON.stringify({ audio: { audio: { channels: [8, 16], hidden: [16, 8] } } }),
    '--json',
  ]
  const env = { ...process.env, OMP_NUM_THREADS: '1' }
  const serialOut = join(tempDir('ep-cv-serial-'), 'cv')
  let started = Date.now()
  const serial = spawnSync(process.execPath, args(serialOut), { env, encoding: 'utf8' })
  const serialSeconds = (Date.now() - started) / 1000
  t.is(serial.status, 0, serial.stderr.slice(-2000))
  const parallelOut = join(tempDir('ep-cv-parallel-'), 'cv')
  started = Date.now()
  const parallel = spawnSync(process.execPath, [...args(parallelOut), '--nproc-per-node', '2'], { env, encoding: 'utf8' })
  t.log(`3 folds: serial ${serialSeconds.toFixed(1)} s, 2 processes ${((Date.now() - started) / 1000).toFixed(1)} s (one core each)`)
  t.is(parallel.status, 0, parallel.stderr.slice(-3000))
  // Rank 1 ran fold 1 (the second of 3), rank 0 folds 0 and 2.
  t.regex(parallel.stderr, /\[rank 1\] .*"fold":1,"folds":3/)
  t.notRegex(parallel.stderr, /\[rank 1\] .*"type":"fold","fold":[02]/)
  const figures = (dir: string) => {
    const cv = JSON.parse(readFileSync(join(dir, 'cv.json'), 'utf8'))
    return { finished: cv.finished, audio: cv.models.audio.perFold, testSpeakers: cv.testSpeakers }
  }
  t.deepEqual(figures(parallelOut), figures(serialOut))
  const result = JSON.parse(parallel.stdout.trim().split('\n').pop()!)
  t.deepEqual(result.finished, [0, 1, 2])
  // The same command under the real torchrun (its agent store and variables): the same figures.
  const python = referencePython()
  const torchrun = python && join(dirname(python), 'torchrun')
  if (!torchrun || !existsSync(torchrun)) return t.log('no torchrun in the contributor venv: the torchrun half skipped')
  const torchrunOut = join(tempDir('ep-cv-torchrun-'), 'cv')
  const launched = spawnSync(torchrun, ['--standalone', '--nproc-per-node', '2', '--no-python', process.execPath, ...args(torchrunOut)], {
    env,
    encoding: 'utf8',
    timeout: 300_000,
  })
  t.is(launched.status, 0, launched.stderr.slice(-3000))
  t.deepEqual(figures(torchrunOut), figures(serialOut))
})

test.serial(
  'a sharded encoder pass: each of 2 ranks computes half into the shared cache, both get the single-process states',
  async (t) => {
    if (!haveRavdess) return skip(t, NO_DATA)
    const files = readdirSync(join(ravdessDir, 'Actor_05'))
      .sort()
      .slice(0, 8)
      .map((f) => join(ravdessDir, 'Actor_05', f))
    const alone = await extractEmbeddings(files, { encoder: 'whisper-tiny.en', device: 'cpu', precision: 'fp32', cacheDir: null })
    const cacheDir = tempDir('ep-shared-cache-')
    const world = { worldSize: 2, localWorldSize: 2, masterPort: await freePort(), timeoutSeconds: 60, heartbeatSeconds: 10, localRank: 0 }
    const file = worker(`
  const { extractEmbeddings } = await import(${JSON.stringify(resolve(import.meta.dirname, '..', 'dist', 'index.js'))})
  const e = await extractEmbeddings(${JSON.stringify(files)}, {
    encoder: 'whisper-tiny.en', device: 'cpu', precision: 'fp32', cacheDir: ${JSON.stringify(cacheDir)}, world,
  })
  await world.leave()
  console.log(JSON.stringify({ shape: e.shape, cache: e.cache, data: Array.from(e.data.subarray(0, 64)), sum: e.data.reduce((a, b) => a + b, 0) }))`)
    const results = await runRanks(file, world, 2)
    const sum = alone.data.reduce((a, b) => a + b, 0)
    for (const [rank, r] of results.entries()) {
      t.is(r.status, 0, r.stderr + r.stdout)
      const got = JSON.parse(r.stdout) as { shape: number[]; cache: { hits: number; misses: number }; data: number[]; sum: number }
      t.deepEqual(got.shape, alone.shape)
      t.deepEqual(got.cache, { hits: 8, misses: 0, writes: 0 }, `rank ${rank} read every clip from the shared cache`)
      t.deepEqual(got.data, Array.from(alone.data.subarray(0, 64)))
      t.true(Math.abs(got.sum - sum) < 1e-3 * Math.abs(sum), `rank ${rank}`)
    }
    // What a rank cannot see is refused by name: a cacheDir that rank 1 does not share.
    const split = worker(`
  const { extractEmbeddings } = await import(${JSON.stringify(resolve(import.meta.dirname, '..', 'dist', 'index.js'))})
  const dir = world.rank === 0 ? ${JSON.stringify(tempDir('ep-cache-a-'))} : ${JSON.stringify(tempDir('ep-cache-b-'))}
  await extractEmbeddings(${JSON.stringify(files.slice(0, 2))}, { encoder: 'whisper-tiny.en', device: 'cpu', cacheDir: dir, world })`)
    const refused = await runRanks(split, { ...world, masterPort: await freePort() }, 2)
    const one = JSON.parse(refused[1].stdout)
    t.is(one.code, 'DISTRIBUTED')
    t.regex(one.message, /cacheDir .* is not shared: rank 1 does not see the file rank 0 wrote there/)
  },
)

test.serial('under torchrun (its agent store, its variables) the ranks join one world', async (t) => {
  const python = referencePython()
  const torchrun = python && join(dirname(python), 'torchrun')
  if (!torchrun || !existsSync(torchrun)) return skip(t, 'no torchrun in the contributor venv: skipped')
  const file = join(tempDir('ep-torchrun-'), 'worker.mjs')
  writeFileSync(
    file,
    `import { joinWorld } from ${JSON.stringify(dist)}
const world = await joinWorld('env')
await world.set('hi/' + world.rank, String(process.pid))
await world.barrier('hello')
const pids = await Promise.all([...Array(world.worldSize).keys()].map((r) => world.get('hi/' + r)))
await world.leave()
console.log(JSON.stringify({ rank: world.rank, size: world.worldSize, pids, agent: process.env.TORCHELASTIC_USE_AGENT_STORE }))`,
  )
  const r = spawnSync(torchrun, ['--standalone', '--nproc-per-node', '2', '--no-python', process.execPath, file], {
    encoding: 'utf8',
    timeout: 120_000,
  })
  t.is(r.status, 0, r.stderr.slice(-2000))
  const lines = r.stdout
    .trim()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { rank: number; size: number; pids: string[]; agent: string })
  t.deepEqual(lines.map((l) => l.rank).sort(), [0, 1])
  t.true(lines.every((l) => l.size === 2 && l.pids.length === 2 && l.agent === 'True'))
  t.deepEqual(lines[0].pids, lines[1].pids)
})
